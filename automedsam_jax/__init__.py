"""automedsam-jax: AutoMedSAM and the SAM/MedSAM/LiteMedSAM family in JAX/Flax NNX."""

from .config import PRESETS, SamConfig
from .modeling import Sam, build_sam

__all__ = ["PRESETS", "Sam", "SamConfig", "build_sam"]
