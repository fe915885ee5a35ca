"""Data layer: challenge npz / demo CT / synthetic sources → tfds slices → grain pipelines.

Frames: *original* (the stored slice), *input* (``S×S×3`` encoder input, S = 1024 or 256) and
*low-res* (256×256 decoder logits); see :mod:`.sample`.
"""

from .builder import AutomedsamSlices, prepare
from .errors import BadInputError
from .npz import read_npz
from .pipeline import PipelineConfig, eval_dataset, steps_per_epoch, train_dataset
from .presets import PRESETS, DatasetConfig, get_preset
from .synthetic import SyntheticConfig

__all__ = ["AutomedsamSlices", "prepare", "BadInputError", "read_npz", "PipelineConfig",
           "eval_dataset", "steps_per_epoch", "train_dataset", "PRESETS", "DatasetConfig",
           "get_preset", "SyntheticConfig"]
