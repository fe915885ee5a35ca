"""What AutoMedSAM trains (SPEC §1.3) and how: the trainable filter and AdamW (SPEC §3).

Trained: the class prompt encoder, the mask decoder and the loss σ's. Frozen: the image encoder
and SAM's prompt encoder (and every non-``Param`` variable: BatchNorm statistics, the Gaussian PE
buffer). σ is excluded from weight decay. The trainer splits a :class:`Trainee` by
:data:`TRAINABLE` and applies :func:`adamw` (raw optax) to the trained part
(:mod:`automedsam_jax.train.step`):

    trainee = Trainee(model, LossWeights(loss_cfg))
    state, frozen, graphdef = init_state(trainee, adamw(), data_mesh())
    step = make_train_step(graphdef, adamw(), mesh)
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from ..core.automedsam import AutoMedSAM
from ..core.losses import LossScale, LossWeights

TRAINABLE = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("class_prompt_encoder"),
                                       nnx.PathContains("mask_decoder"), LossScale))
"""nnx filter of the trained variables (``nnx.split(trainee, TRAINABLE, ...)``)."""


class Trainee(nnx.Module):
    """The model and the loss σ's in one tree, so one optimizer updates both."""

    def __init__(self, model: AutoMedSAM, loss_weights: LossWeights):
        self.model = model
        self.loss_weights = loss_weights


def _decay_mask(params):
    """True for every leaf but the σ's (the ``sigma`` attribute of :class:`LossWeights`)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", None) == "sigma" for k in path), params)


def adamw(learning_rate: float | optax.Schedule = 1e-4, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.01) -> optax.GradientTransformation:
    """The paper's AdamW; weight decay on every trained parameter except σ."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=_decay_mask)
