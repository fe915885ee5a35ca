"""automedsam-jax: AutoMedSAM and the SAM/MedSAM/LiteMedSAM family in JAX/Flax NNX."""

from .automedsam import AutoMedSAM
from .config import PRESETS, AutoMedSamConfig, ClassPromptConfig, LossConfig, SamConfig
from .modeling import Sam, build_sam

__all__ = ["PRESETS", "AutoMedSAM", "AutoMedSamConfig", "ClassPromptConfig", "LossConfig", "Sam",
           "SamConfig", "build_sam"]
