"""The ``map`` route (beyond the paper; docs/method.md#localisation-head): a localisation head on
the frozen embedding gives per-cell logits over background and the K classes; each class's box
(the largest connected component it wins, + ``margin`` cells) prompts the frozen backbone through
its own prompt encoder and decoder, so MedSAM/LiteMedSAM draws the organ as from a manual box.

Trained: the localiser alone, with its class-balanced cross-entropy against the slice's label map
at the embedding grid. A class's presence score is the area of that component.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from ..automedsam import box_masks, with_dtype
from ..losses import localiser_loss
from ..modeling.localiser import Localiser, map_boxes
from . import Route, register
from .class_prompt import class_prompt_encoder

LOCALISER = nnx.All(nnx.Param, nnx.PathContains("localiser"))
"""The localiser's variables."""


def localiser(cfg, seed: int) -> Localiser:
    """A fresh localisation head (Flax's default init, key ``seed``)."""
    return Localiser(cfg.localiser, cfg.sam.decoder.transformer_dim, rngs=nnx.Rngs(seed))


def localiser_ce(model, embeddings, batch, compute_dtype):
    """The localiser's cross-entropy against the batch's ``grid_label``."""
    head = with_dtype(model.localiser, compute_dtype)
    return localiser_loss(head(embeddings.astype(compute_dtype)), batch["grid_label"])


def boxes_from_map(model, proposal, record, class_ids, input_size):
    """One slice's map → its K boxes (input frame), which classes won a cell, their areas."""
    boxes, areas = map_boxes(proposal, class_ids, tuple(int(x) for x in record["resized_size"]),
                             input_size, model.config.localiser.margin)
    return boxes, areas > 0, areas


@register
class MapRoute(Route):
    name = "map"
    parts = ("localiser",)
    grid_labels = True
    presence_score = "largest component on the localiser's map"

    def new_parts(self, cfg, seed, abstract):
        parts = {"localiser": localiser(cfg, seed)}
        if cfg.class_prompt is not None:  # a model saved before routes had names kept one
            parts["class_prompt_encoder"] = class_prompt_encoder(cfg, seed, abstract)
        return parts

    def trainable(self, train_decoder: bool):
        return LOCALISER

    def loss(self, trainee, embeddings, batch, key, *, compute_dtype, negatives):
        ce = localiser_ce(trainee.model, embeddings, batch, compute_dtype)
        return ce, {"localiser_ce": ce}

    def propose(self, model, embeddings):
        return model.localise(embeddings)

    def prompts(self, model, proposal, record, class_ids, input_size):
        return boxes_from_map(model, proposal, record, class_ids, input_size)

    def masks(self, model, embeddings, prompts, class_ids):
        return box_masks(model, embeddings, prompts)[0]
