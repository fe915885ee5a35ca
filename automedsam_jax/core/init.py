"""Models without a checkpoint: shape-only (to be filled by a loader) and random (tests).

:func:`abstract_model` builds the :class:`Sam` or :class:`AutoMedSAM` a config describes without
allocating or computing anything; loaders (:mod:`automedsam_jax.io.checkpoint`, the PyTorch
conversion) fill it. :func:`random_model` fills it with NumPy draws, so no initializer is
compiled (an nnx init of every module takes ~25 s on 2 CPU cores): the one random model of the
tests, benchmarks and ``train.py --weights random``. A pretrained backbone with a fresh class
prompt encoder is :meth:`AutoMedSAM.from_sam`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from .automedsam import AutoMedSAM
from .config import AutoMedSamConfig, SamConfig
from .modeling import Sam


def abstract_model(cfg: SamConfig | AutoMedSamConfig | str) -> Sam | AutoMedSAM:
    """A shape-only :class:`Sam` (a ``SamConfig`` or preset name) or :class:`AutoMedSAM`."""
    if isinstance(cfg, AutoMedSamConfig):
        return AutoMedSAM.abstract(cfg)
    cfg = SamConfig.preset(cfg) if isinstance(cfg, str) else cfg
    return nnx.eval_shape(lambda: Sam(cfg, rngs=nnx.Rngs(0)))


def random_model(cfg: SamConfig | AutoMedSamConfig | str, seed: int = 0) -> Sam | AutoMedSAM:
    """Every variable drawn with NumPy: matrices/kernels ~ U(±1/√fan_in), norm scales and
    variances 1, biases and means 0, other tensors ~ N(0, 0.02)."""
    model = abstract_model(cfg)
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
