"""The uncertainty-aware joint loss of SPEC §2, jit-friendly (no host work).

Per sample: low-res-frame logits ``(B, L, L)`` for class c, its binary GT ``mask`` ``(B, L, L)``
and the shape-distance map ``dist`` ``(B, L, L)`` (distance to the GT boundary / L, computed by the
input pipeline: ``automedsam_jax.data.sample.shape_distance_map``).

Terms: ``mse`` (distillation of the class prompt encoder towards box-prompted MedSAM), ``ce``
(binary cross-entropy with logits), ``dice`` (soft Dice with squared denominators), ``sd`` (shape
distance). Total: Σ_i L_i/(2σ_i²) + log(1 + σ_i²) with learned σ (initialised to 1, σ² ≥ 1e-8), or
Σ_i L_i with ``LossConfig(weighting="fixed")``.

    weights = LossWeights(loss_cfg)                  # σ's: trainable, never weight-decayed
    total, terms = joint_loss(out, batch, model.teacher(batch["box"]), weights)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .automedsam import AutoMedSamOutput
from .config import LossConfig

SIGMA_SQ_FLOOR = 1e-8
DICE_SMOOTH = 1e-5


def distillation_loss(sparse: jax.Array | None, dense: jax.Array | None,
                      teacher_sparse: jax.Array, teacher_dense: jax.Array) -> jax.Array:
    """MSE(P_s, T_s) + MSE(P_d, T_d); a disabled branch (None) contributes nothing.

    sparse ``(B, 2, C)`` vs the box tokens ``(B, 2, C)``; dense ``(B, g, g, C)`` vs
    ``no_mask_embed`` ``(B, g, g, C)``.
    """
    loss = jnp.zeros((), jnp.float32)
    for pred, target in ((sparse, teacher_sparse), (dense, teacher_dense)):
        if pred is not None:
            loss = loss + jnp.mean((pred - jax.lax.stop_gradient(target)) ** 2)
    return loss


def bce_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean binary cross-entropy with logits over every pixel of ``(B, L, L)``."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, mask))


def dice_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over samples of 1 − (2Σpg + 1e-5)/(Σp² + Σg² + 1e-5), p = sigmoid(logits)."""
    p = jax.nn.sigmoid(logits)
    axes = tuple(range(1, logits.ndim))
    inter = jnp.sum(p * mask, axes)
    denom = jnp.sum(p * p, axes) + jnp.sum(mask * mask, axes)
    return jnp.mean(1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH))


def shape_distance_loss(logits: jax.Array, mask: jax.Array, dist: jax.Array) -> jax.Array:
    """mean[(p − g)² · D²]: errors far from the GT boundary cost more; 0 when p = g."""
    p = jax.nn.sigmoid(logits)
    return jnp.mean((p - mask) ** 2 * jax.lax.stop_gradient(dist) ** 2)


def uncertainty_weighting(losses: jax.Array, sigma: jax.Array) -> jax.Array:
    """Σ_i L_i / (2σ_i²) + log(1 + σ_i²) over ``(n,)`` losses and ``(n,)`` σ's, σ² ≥ 1e-8."""
    sigma_sq = jnp.maximum(sigma ** 2, SIGMA_SQ_FLOOR)
    return jnp.sum(losses / (2.0 * sigma_sq) + jnp.log1p(sigma_sq))


class LossScale(nnx.Param):
    """A σ of the uncertainty weighting: trained, never weight-decayed."""


class LossWeights(nnx.Module):
    """The learned σ's, one per term of ``cfg.terms`` in that order (absent for fixed weights).

    ``sigma`` is a :class:`LossScale` — an ``nnx.Param`` subclass, so the optimizer filter can
    train it and keep it out of weight decay (see :mod:`automedsam_jax.optim`).
    """

    def __init__(self, cfg: LossConfig):
        self.config = cfg
        if cfg.weighting == "uncertainty":
            self.sigma = LossScale(jnp.ones((len(cfg.terms),), jnp.float32))


def loss_terms(out: AutoMedSamOutput, batch: dict, teacher: tuple[jax.Array, jax.Array],
               terms: tuple[str, ...]) -> dict[str, jax.Array]:
    """Each requested term as a scalar. ``batch`` holds ``mask`` and ``dist`` ``(B, L, L)``;
    ``teacher`` is ``AutoMedSAM.teacher(batch["box"])``."""
    logits, mask = out.low_res_logits, batch["mask"]
    compute = {
        "mse": lambda: distillation_loss(out.sparse, out.dense, *teacher),
        "ce": lambda: bce_loss(logits, mask),
        "dice": lambda: dice_loss(logits, mask),
        "sd": lambda: shape_distance_loss(logits, mask, batch["dist"]),
    }
    return {name: compute[name]() for name in terms}


def joint_loss(out: AutoMedSamOutput, batch: dict, teacher: tuple[jax.Array, jax.Array],
               weights: LossWeights) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss (scalar) and the unweighted terms (for logging), per ``weights.config``."""
    cfg = weights.config
    terms = loss_terms(out, batch, teacher, cfg.terms)
    values = jnp.stack([terms[name] for name in cfg.terms])
    if cfg.weighting == "fixed":
        return jnp.sum(values), terms
    return uncertainty_weighting(values, weights.sigma[...]), terms
