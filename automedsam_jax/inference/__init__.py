"""Inference: the model run on images and volumes, no labels needed (``predict``, evaluation and
validation run it; :mod:`automedsam_jax.evaluation` scores what it draws).

segmenter.py (batched slices × class prompts → label maps, through a model's prompt route) ·
predictor.py (:class:`SamPredictor`, SAM's box/point predictor interface) · postprocess_3d.py
(``--postprocess 3d``: a case's slice-wise labels as a volume) · options.py (the options evaluate
and predict share). No tensorflow-datasets, no grain.
"""

from .postprocess_3d import postprocess_case
from .predictor import SamPredictor
from .segmenter import Record, Segmenter, segment_slices

__all__ = ["Record", "SamPredictor", "Segmenter", "postprocess_case", "segment_slices"]
