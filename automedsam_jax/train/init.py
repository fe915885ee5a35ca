"""Fast random models for tests and smoke runs: shapes from ``AutoMedSAM.abstract`` filled with
NumPy draws, so no initializer is compiled (``build_automedsam`` takes ~25 s on 2 CPU cores)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..automedsam import AutoMedSAM
from ..config import AutoMedSamConfig


def random_automedsam(cfg: AutoMedSamConfig, seed: int = 0) -> AutoMedSAM:
    """Every variable drawn with NumPy: matrices/kernels ~ U(±1/√fan_in), norm scales and
    variances 1, biases and means 0, other tensors ~ N(0, 0.02)."""
    model = AutoMedSAM.abstract(cfg)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        name, shape = str(path[-1]), var.get_value().shape
        if name in ("scale", "var", "weight") and len(shape) == 1:
            value = np.ones(shape)
        elif name in ("bias", "mean") or "bias" in name:
            value = np.zeros(shape)
        elif len(shape) >= 2:
            bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
            value = rng.uniform(-bound, bound, shape)
        else:
            value = rng.normal(0, 0.02, shape)
        var.set_value(jnp.asarray(value, var.get_value().dtype))
    return model
