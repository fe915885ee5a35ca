"""Deprecated (kept for one release): :class:`SamPredictor` is
:class:`automedsam_jax.inference.SamPredictor` (:mod:`automedsam_jax.inference.predictor`)."""

import warnings

from .inference.predictor import SamPredictor

warnings.warn("automedsam_jax.predictor is deprecated: import SamPredictor from "
              "automedsam_jax.inference", DeprecationWarning, stacklevel=2)

__all__ = ["SamPredictor"]
