"""What AutoMedSAM trains (docs/method.md#trained-and-frozen-parts) and how: the trainable
filter, AdamW and its config, ``OptimConfig`` (docs/method.md#paper-recipe; the training config
nests it as ``optim``).

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

import dataclasses
from typing import Literal

import jax
import optax
from flax import nnx

from ..core.automedsam import AutoMedSAM
from ..core.losses import LossWeights
from ..core.routes import route_of


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimiser (AdamW) and the run's length."""

    epochs: int = 100
    """training epochs"""
    batch_size: int = 16
    """global batch size over every device and host"""
    lr: float = 1e-4
    """AdamW learning rate"""
    b1: float = 0.9
    """AdamW beta1"""
    b2: float = 0.999
    """AdamW beta2"""
    eps: float = 1e-8
    """AdamW epsilon"""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay"""
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    """plateau (the paper): lr x plateau_factor when the mean epoch loss has not improved for
    plateau_patience epochs; cosine: lr decays to 0 over the run"""
    plateau_patience: int = 5
    """epochs without improvement before the plateau schedule lowers the lr"""
    plateau_factor: float = 0.9
    """the plateau schedule's lr factor"""
    max_steps: int = 0
    """stop after this many steps (0: all epochs)"""

    def __post_init__(self):
        for name in ("epochs", "batch_size", "lr", "plateau_patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got "
                                 f"{getattr(self, name)}")
        if self.max_steps < 0:
            raise ValueError(f"--max-steps must be >= 0 (0: all epochs), got {self.max_steps}")
        if not 0 < self.plateau_factor <= 1:
            raise ValueError(f"--plateau-factor must be in (0, 1], got {self.plateau_factor}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps > 0
                and self.weight_decay >= 0):
            raise ValueError(f"--b1 and --b2 must be in [0, 1), --eps > 0 and --weight-decay "
                             f">= 0, got {self.b1}, {self.b2}, {self.eps}, {self.weight_decay}")


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
    """AdamW (the defaults: :class:`OptimConfig`'s, the paper's); weight decay on every
    trained parameter except σ."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=_decay_mask)
