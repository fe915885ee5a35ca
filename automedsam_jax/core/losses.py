"""The uncertainty-aware joint loss (docs/method.md#losses), jit-friendly (no host work).

Per sample: low-res-frame logits ``(B, L, L)`` for class c, its binary GT ``mask`` ``(B, L, L)``
and the shape-distance map ``dist`` ``(B, L, L)`` (distance to the GT boundary / L, computed by the
input pipeline: ``automedsam_jax.data.sample.shape_distance_map``).

Terms: ``mse`` (distillation of the class prompt encoder towards box-prompted MedSAM), ``ce``
(binary cross-entropy with logits), ``dice`` (soft Dice with squared denominators), ``sd`` (shape
distance). Total: Σ_i L_i/(2σ_i²) + log(1 + σ_i²) with learned σ (initialised to 1, σ² ≥ 1e-8), or
Σ_i L_i with ``LossConfig(weighting="fixed")``.

Absent classes (docs/method.md#absent-classes, beyond the paper). A batch may carry ``present``
``(B,)`` (1 where the sample's class is in its slice, 0 for a *negative*: an absent class with an
empty target mask). Then every term is a mean over the samples it is defined for: ``ce`` over every
sample (a negative is pushed to an empty mask everywhere) when ``negatives`` is on, else over the
present ones; ``mse`` (no GT box, so no teacher), ``dice`` (undefined for an empty target: its
smoothed value is ≈ 1 whatever the prediction) and ``sd`` (no boundary) over the present samples
only. Without ``present`` the terms are the paper's plain batch means, computed exactly as before.

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


def dice_per_sample(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """``(B,)``: 1 − (2Σpg + 1e-5)/(Σp² + Σg² + 1e-5) of each sample, p = sigmoid(logits)."""
    p = jax.nn.sigmoid(logits)
    axes = tuple(range(1, logits.ndim))
    inter = jnp.sum(p * mask, axes)
    denom = jnp.sum(p * p, axes) + jnp.sum(mask * mask, axes)
    return 1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)


def dice_loss(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over samples of :func:`dice_per_sample`."""
    return jnp.mean(dice_per_sample(logits, mask))


def shape_error(logits: jax.Array, mask: jax.Array, dist: jax.Array) -> jax.Array:
    """Per pixel (p − g)² · D² (D without gradient)."""
    p = jax.nn.sigmoid(logits)
    return (p - mask) ** 2 * jax.lax.stop_gradient(dist) ** 2


def shape_distance_loss(logits: jax.Array, mask: jax.Array, dist: jax.Array) -> jax.Array:
    """mean[(p − g)² · D²]: errors far from the GT boundary cost more; 0 when p = g."""
    return jnp.mean(shape_error(logits, mask, dist))


def uncertainty_weighting(losses: jax.Array, sigma: jax.Array) -> jax.Array:
    """Σ_i L_i / (2σ_i²) + log(1 + σ_i²) over ``(n,)`` losses and ``(n,)`` σ's, σ² ≥ 1e-8."""
    sigma_sq = jnp.maximum(sigma ** 2, SIGMA_SQ_FLOOR)
    return jnp.sum(losses / (2.0 * sigma_sq) + jnp.log1p(sigma_sq))


class LossScale(nnx.Param):
    """A σ of the uncertainty weighting: trained, never weight-decayed."""


class LossWeights(nnx.Module):
    """The learned σ's, one per term of ``cfg.terms`` in that order (absent for fixed weights).

    ``sigma`` is a :class:`LossScale` — an ``nnx.Param`` subclass, so the optimizer filter can
    train it and keep it out of weight decay (see :mod:`automedsam_jax.train.optim`).
    """

    def __init__(self, cfg: LossConfig):
        self.config = cfg
        if cfg.weighting == "uncertainty":
            self.sigma = LossScale(jnp.ones((len(cfg.terms),), jnp.float32))


def _sample_mean(x: jax.Array) -> jax.Array:
    """``(B, ...)`` → ``(B,)``: the mean over every axis but the first."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def _weighted_mean(per_sample: jax.Array, weight: jax.Array) -> jax.Array:
    """Σ w·x / Σ w over ``(B,)`` samples (0 when no sample has weight)."""
    return jnp.sum(per_sample * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def masked_loss_terms(out: AutoMedSamOutput, batch: dict, teacher: tuple[jax.Array, jax.Array],
                      terms: tuple[str, ...], negatives: bool) -> dict[str, jax.Array]:
    """The terms with absent classes (see the module docstring): ``batch["present"]`` ``(B,)``
    selects the samples of ``mse``/``dice``/``sd``; ``ce`` covers every sample when
    ``negatives`` (else the present ones too)."""
    logits, mask = out.low_res_logits, batch["mask"]
    present = batch["present"].astype(jnp.float32)
    ce_weight = jnp.ones_like(present) if negatives else present

    def mse():
        per = jnp.zeros_like(present)
        for pred, target in ((out.sparse, teacher[0]), (out.dense, teacher[1])):
            if pred is not None:
                per = per + _sample_mean((pred - jax.lax.stop_gradient(target)) ** 2)
        return _weighted_mean(per, present)

    compute = {
        "mse": mse,
        "ce": lambda: _weighted_mean(
            _sample_mean(optax.sigmoid_binary_cross_entropy(logits, mask)), ce_weight),
        "dice": lambda: _weighted_mean(dice_per_sample(logits, mask), present),
        "sd": lambda: _weighted_mean(
            _sample_mean(shape_error(logits, mask, batch["dist"])), present),
    }
    return {name: compute[name]() for name in terms}


def loss_terms(out: AutoMedSamOutput, batch: dict, teacher: tuple[jax.Array, jax.Array],
               terms: tuple[str, ...], negatives: bool = False) -> dict[str, jax.Array]:
    """Each requested term as a scalar. ``batch`` holds ``mask`` and ``dist`` ``(B, L, L)``
    (and optionally ``present`` ``(B,)``: :func:`masked_loss_terms`); ``teacher`` is
    ``AutoMedSAM.teacher(batch["box"])``."""
    if "present" in batch:
        return masked_loss_terms(out, batch, teacher, terms, negatives)
    logits, mask = out.low_res_logits, batch["mask"]
    compute = {
        "mse": lambda: distillation_loss(out.sparse, out.dense, *teacher),
        "ce": lambda: bce_loss(logits, mask),
        "dice": lambda: dice_loss(logits, mask),
        "sd": lambda: shape_distance_loss(logits, mask, batch["dist"]),
    }
    return {name: compute[name]() for name in terms}


def joint_loss(out: AutoMedSamOutput, batch: dict, teacher: tuple[jax.Array, jax.Array],
               weights: LossWeights, negatives: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss (scalar) and the unweighted terms (for logging), per ``weights.config``;
    ``negatives``: absent classes (``batch["present"] == 0``) count in the CE term."""
    cfg = weights.config
    terms = loss_terms(out, batch, teacher, cfg.terms, negatives)
    values = jnp.stack([terms[name] for name in cfg.terms])
    if cfg.weighting == "fixed":
        return jnp.sum(values), terms
    return uncertainty_weighting(values, weights.sigma[...]), terms


def localiser_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Class-balanced softmax cross-entropy of the localiser (beyond the paper).

    ``logits`` ``(B, g, g, K + 1)``, ``labels`` ``(B, g, g)`` int class ids at the embedding grid
    (0 background, padding included). Each cell's CE is weighted by ``(N / n_c)^½`` for its
    class c, with ``n_c`` the cells of class c in the batch and N all cells: small organs count
    more than their area, less than equal shares. → the weighted mean (a scalar)."""
    k = logits.shape[-1]
    onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)
    counts = onehot.sum(axis=tuple(range(labels.ndim)))
    weight = jnp.sqrt(labels.size / jnp.maximum(counts, 1.0))[labels]
    ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)
    return jnp.sum(weight * ce) / jnp.sum(weight)
