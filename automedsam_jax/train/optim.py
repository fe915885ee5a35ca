"""What AutoMedSAM trains (docs/method.md#trained-and-frozen-parts) and how: the trainable
filter and AdamW (docs/method.md#paper-recipe).

What trains is the model's prompt route's choice (:meth:`automedsam_jax.core.routes.Route.
trainable`): the paper's class prompt encoder, mask decoder and loss σ's; a localiser alone; ….
Frozen, always: the image encoder and SAM's prompt encoder (and every non-``Param`` variable:
BatchNorm statistics, the Gaussian PE buffer). σ is excluded from weight decay. The trainer
splits a :class:`Trainee` by :func:`trainable` and applies :func:`adamw` (raw optax) to the
trained part (:mod:`automedsam_jax.train.step`):

    trainee = Trainee(model, LossWeights(loss_cfg))
    state, frozen, graphdef = init_state(trainee, adamw(), data_mesh())
    step = make_train_step(graphdef, adamw(), mesh)
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from ..core.automedsam import AutoMedSAM
from ..core.losses import LossWeights
from ..core.routes import route_of
from .config import OptimConfig


class Trainee(nnx.Module):
    """The model and the loss σ's in one tree, so one optimizer updates both; ``train_decoder``
    False keeps the mask decoder frozen (on the routes that can train it)."""

    def __init__(self, model: AutoMedSAM, loss_weights: LossWeights, train_decoder: bool = True):
        self.model = model
        self.loss_weights = loss_weights
        self.train_decoder = train_decoder


def trainable(trainee: Trainee):
    """The nnx filter of ``trainee``'s trained variables: its model's route's."""
    return route_of(trainee.model).trainable(trainee.train_decoder)


def _decay_mask(params):
    """True for every leaf but the σ's (the ``sigma`` attribute of :class:`LossWeights`)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(getattr(k, "key", None) == "sigma" for k in path), params)


def adamw(learning_rate: float | optax.Schedule = OptimConfig.lr, b1: float = OptimConfig.b1,
          b2: float = OptimConfig.b2, eps: float = OptimConfig.eps,
          weight_decay: float = OptimConfig.weight_decay) -> optax.GradientTransformation:
    """AdamW (the defaults: :class:`~.config.OptimConfig`'s, the paper's); weight decay on every
    trained parameter except σ."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=_decay_mask)
