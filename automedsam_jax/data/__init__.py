"""Data layer: original releases / challenge npz / demo CT / synthetic sources → tfds slices →
grain pipelines.

The only layer that imports ``tensorflow_datasets`` and ``grain``; files themselves are read by
:mod:`automedsam_jax.io`.

Frames: *original* (the stored slice), *input* (``S×S×3`` encoder input, S = 1024 or 256) and
*low-res* (256×256 decoder logits); see :mod:`.sample`.
"""

from .builder import AutomedsamSlices, prepare
from .npz import read_npz
from .pipeline import PipelineConfig, eval_dataset, steps_per_epoch, train_dataset
from .presets import DEFAULT_DATA_DIR, PRESETS, DatasetConfig, get_preset
from .synthetic import SyntheticConfig

__all__ = ["AutomedsamSlices", "DEFAULT_DATA_DIR", "prepare", "read_npz", "PipelineConfig",
           "eval_dataset", "steps_per_epoch", "train_dataset", "PRESETS", "DatasetConfig",
           "get_preset", "SyntheticConfig"]
