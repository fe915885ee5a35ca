"""The ``refine`` route (beyond the paper; docs/method.md#refiner): AutoMedSAM's diffusion class
prompt encoder on top of the localiser. The map's box of a class is the starting prompt (SAM's
prompt encoder's embedding of that box); the class prompt encoder, given the embedding, the class
and the box, refines the sparse and dense prompts
(:class:`~automedsam_jax.core.modeling.prompt_refiner.PromptRefiner`) for the mask decoder.

Training, in one step: the localiser's cross-entropy against the grid labels, plus the
uncertainty-weighted joint loss (MSE to the GT-box teacher, CE, Dice, shape distance) of the
refined masks over the samples whose class is present. The refiner starts from the GT box
perturbed as the map's boxes are — the map's margin outwards and a normal error of
:data:`START_ERROR_CELLS` cells per side — so it learns to correct the boxes it will be given.
The mask decoder stays frozen unless ``train_decoder``. Presence: the map's, as the ``map``
route.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..automedsam import AutoMedSamOutput, with_dtype
from ..losses import LossScale, joint_loss
from ..modeling.prompt_refiner import PromptRefiner, init_prompt_refiner
from . import Route, register
from .map import boxes_from_map, localiser, localiser_ce

START_ERROR_CELLS = 1.0
"""Standard deviation of the training start box's error per side, in embedding-grid cells."""
REFINER = nnx.Any(nnx.PathContains("localiser"), nnx.PathContains("prompt_refiner"), LossScale)


def start_boxes(boxes: jax.Array, key: jax.Array, cell: float, margin: float, size: int
                ) -> jax.Array:
    """``(B, 4)`` GT boxes → starting boxes like the map's: each side ``margin`` cells out plus
    N(0, :data:`START_ERROR_CELLS`²) cells, clipped to the ``size`` px frame, at least one
    pixel wide and high."""
    out = jnp.array([-1.0, -1.0, 1.0, 1.0]) * margin * cell
    err = jax.random.normal(key, boxes.shape) * START_ERROR_CELLS * cell
    b = jnp.clip(boxes + out + err, 0.0, float(size))
    x0, y0 = jnp.minimum(b[:, 0], b[:, 2] - 1.0), jnp.minimum(b[:, 1], b[:, 3] - 1.0)
    return jnp.stack([jnp.maximum(x0, 0.0), jnp.maximum(y0, 0.0),
                      jnp.maximum(b[:, 2], x0 + 1.0), jnp.maximum(b[:, 3], y0 + 1.0)], axis=-1)


def refined_masks(model, embeddings, class_ids, boxes, *, key=None, noise=None
                  ) -> AutoMedSamOutput:
    """``(n, g, g, C)`` embeddings, ``(n,)`` class ids, ``(n, 4)`` boxes → refined masks and
    prompts (one per row)."""
    sparse, dense = model.refine(embeddings, class_ids, boxes, key=key, noise=noise)
    low, iou = model._masks(embeddings, sparse, dense, class_ids.shape[0])
    return AutoMedSamOutput(low, iou, sparse, dense)


@register
class RefineRoute(Route):
    name = "refine"
    parts = ("class_prompt", "localiser")
    grid_labels = True
    presence_score = "largest component on the localiser's map"

    def new_parts(self, cfg, seed, abstract):
        sam = cfg.sam
        args = (cfg.class_prompt, sam.decoder.transformer_dim, sam.embedding_size,
                sam.image_size)
        refiner = (PromptRefiner(*args, rngs=nnx.Rngs(0)) if abstract
                   else init_prompt_refiner(*args, seed))
        return {"localiser": localiser(cfg, seed), "prompt_refiner": refiner}

    def trainable(self, train_decoder: bool):
        trained = (REFINER, nnx.PathContains("mask_decoder")) if train_decoder else (REFINER,)
        return nnx.All(nnx.Param, nnx.Any(*trained))

    def loss(self, trainee, embeddings, batch, key, *, compute_dtype, negatives):
        model = trainee.model
        ce = localiser_ce(model, embeddings, batch, compute_dtype)
        sam = model.config.sam
        cell = sam.image_size / sam.embedding_size
        start_key, noise_key = jax.random.split(key)
        start = start_boxes(batch["box"], start_key, cell, model.config.localiser.margin,
                            sam.image_size)
        cast = with_dtype(model, compute_dtype)
        out = refined_masks(cast, embeddings.astype(compute_dtype), batch["class_id"], start,
                            key=noise_key)
        out = AutoMedSamOutput(*(x.astype(jnp.float32) for x in out))
        present = batch.get("present", jnp.ones(batch["class_id"].shape, bool))
        joint, terms = joint_loss(out, {**batch, "present": present}, model.teacher(batch["box"]),
                                  trainee.loss_weights, negatives=False)
        return ce + joint, {"localiser_ce": ce, **terms}

    def propose(self, model, embeddings):
        return model.localise(embeddings)

    def prompts(self, model, proposal, record, class_ids, input_size):
        return boxes_from_map(model, proposal, record, class_ids, input_size)

    def masks(self, model, embeddings, prompts, class_ids):
        b, k = prompts.shape[:2]
        ids = jnp.tile(jnp.asarray(class_ids, jnp.int32), b)
        out = refined_masks(model, jnp.repeat(embeddings, k, axis=0), ids,
                            prompts.reshape(b * k, 4))
        return out.low_res_logits.reshape(b, k, *out.low_res_logits.shape[1:])
