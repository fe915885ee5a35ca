"""automedsam-jax: AutoMedSAM and the SAM/MedSAM/LiteMedSAM family in JAX/Flax NNX.

Layers, each importing only those below it (checked by ``lint-imports``, see pyproject.toml):
apps (``train``, ``evaluation``, ``predict``, ``predictor``, ``boxdemo``) → ``data`` (tfds and
grain) → ``io`` (files: model and run directories, scans, weights) → ``core`` (models, losses,
metrics, preprocessing).
"""

from .core.automedsam import AutoMedSAM
from .core.config import PRESETS, AutoMedSamConfig, ClassPromptConfig, LossConfig, SamConfig
from .core.modeling import Sam

__all__ = ["PRESETS", "AutoMedSAM", "AutoMedSamConfig", "ClassPromptConfig", "LossConfig", "Sam",
           "SamConfig"]
