"""Data layer: original releases / challenge npz / demo CT / synthetic sources → tfds slices →
grain pipelines.

The only layer that imports ``tensorflow_datasets`` and ``grain``; files themselves are read by
:mod:`automedsam_jax.io`.

Frames: *original* (the stored slice), *input* (``S×S×3`` encoder input, S = 1024 or 256) and
*low-res* (256×256 decoder logits); see :mod:`.sample`.
"""

import importlib
from typing import TYPE_CHECKING

# Names resolve on first use (PEP 562), so importing one submodule (``.sample``, ``.augment``)
# does not import tensorflow_datasets (``.builder``) or grain (``.pipeline``): the speed
# benchmarks run on machines that have neither.
_EXPORTS = {"AutomedsamSlices": "builder", "prepare": "builder", "read_npz": "npz",
            "PipelineConfig": "pipeline", "eval_dataset": "pipeline",
            "steps_per_epoch": "pipeline", "train_dataset": "pipeline",
            "DEFAULT_DATA_DIR": "presets", "PRESETS": "presets", "DatasetConfig": "presets",
            "get_preset": "presets", "SyntheticConfig": "synthetic"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the imports, for static analysis (import-linter, IDEs)
    from .builder import AutomedsamSlices, prepare  # noqa: F401
    from .npz import read_npz  # noqa: F401
    from .pipeline import (PipelineConfig, eval_dataset, steps_per_epoch,  # noqa: F401
                           train_dataset)
    from .presets import DEFAULT_DATA_DIR, PRESETS, DatasetConfig, get_preset  # noqa: F401
    from .synthetic import SyntheticConfig  # noqa: F401
