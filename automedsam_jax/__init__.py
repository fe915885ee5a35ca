"""automedsam-jax: AutoMedSAM and the SAM/MedSAM/LiteMedSAM family in JAX/Flax NNX.

Layers, each importing only those below it (checked by ``lint-imports``, see pyproject.toml):
apps (``train``, ``predict``, ``boxdemo``, ``convert``) → ``evaluation`` (scores against labels)
→ ``inference`` (the model run on images and volumes: the segmenter, SAM's predictor, 3-D
post-processing) → ``data`` (tfds and grain) → ``io`` (files: model and run directories, scans,
weights) → ``core`` (models, losses, metrics, preprocessing).
"""

import warnings

from .core.cpu import apply_xla_cpu_flags

apply_xla_cpu_flags()  # before JAX starts its CPU backend (core/cpu.py: XLA_CPU_FLAGS)

from .core.automedsam import AutoMedSAM  # noqa: E402
from .core.config import (  # noqa: E402
    SAM_PRESETS, AutoMedSamConfig, ClassPromptConfig, LossConfig, SamConfig)
from .core.modeling import Sam  # noqa: E402

__all__ = ["SAM_PRESETS", "AutoMedSAM", "AutoMedSamConfig", "ClassPromptConfig", "LossConfig",
           "Sam", "SamConfig"]


def __getattr__(name: str):
    if name == "PRESETS":  # deprecated: the backbones' presets, beside data.presets.PRESETS
        warnings.warn("automedsam_jax.PRESETS is deprecated: use automedsam_jax.SAM_PRESETS",
                      DeprecationWarning, stacklevel=2)
        return SAM_PRESETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
