"""Evaluation of AutoMedSAM and of the box-prompted MedSAM baseline (``python evaluate.py``).

segmenter.py (batched slices × prompts → label maps) · volumes.py (slices → cases) ·
evaluator.py (DSC/NSD per case, class and dataset) · report.py (JSON, CSV, paper-style Markdown)
· presence.py (is a class on a slice: calibration and counts) · postprocess.py (3-D
post-processing of a case) · cli.py (the command). Work
and model directories are found by :mod:`automedsam_jax.io.rundir`.
"""

from .evaluator import CaseResult, Evaluation, evaluate_records
from .presence import PresenceCounts, calibrate, presence_scores, too_few_kinds
from .report import paper_table, write_reports
from .segmenter import Segmenter, segment_slices

__all__ = ["CaseResult", "Evaluation", "PresenceCounts", "Segmenter", "calibrate",
           "evaluate_records", "paper_table", "presence_scores", "segment_slices",
           "too_few_kinds", "write_reports"]
