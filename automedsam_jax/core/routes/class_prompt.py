"""The ``class`` route — the paper (docs/method.md#architecture): the diffusion class prompt
encoder turns (embedding, class id) into sparse and dense prompts for the trained mask decoder.

Trained: the class prompt encoder, the mask decoder (unless ``train_decoder`` is False: the
pretrained decoder draws, beyond the paper) and the loss σ's; σ is kept out of weight decay by
the optimiser (:mod:`automedsam_jax.train.optim`). Inference decodes every requested class id
against each slice's one embedding, noise-free (deterministic); a class's presence score is the
area of its mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..automedsam import AutoMedSamOutput, with_dtype
from ..losses import LossScale, joint_loss
from ..modeling.class_prompt_encoder import ClassPromptEncoder, init_class_prompt_encoder
from . import Route, register

TRAINABLE = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("class_prompt_encoder"),
                                       nnx.PathContains("mask_decoder"), LossScale))
"""The paper's trained variables."""
FROZEN_DECODER = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("class_prompt_encoder"), LossScale))
"""The class prompt side and σ only: the pretrained mask decoder stays as it is."""
PAIR_KEYS = ("class_id", "mask", "box", "dist", "present")
"""Per-(slice, class) batch entries of the all-classes layout."""


def class_prompt_encoder(cfg, seed: int, abstract: bool) -> ClassPromptEncoder:
    dim, grid = cfg.sam.decoder.transformer_dim, cfg.sam.embedding_size
    if abstract:
        return ClassPromptEncoder(cfg.class_prompt, dim, grid, rngs=nnx.Rngs(0))
    return init_class_prompt_encoder(cfg.class_prompt, dim, grid, seed)


def flatten_pairs(batch: dict) -> dict:
    """The all-classes layout's per-(slice, class) entries ``(B, K, ...)`` → ``(B·K, ...)``
    (slice-major, as :meth:`AutoMedSAM.decode` orders the pairs); other layouts unchanged."""
    if batch["class_id"].ndim != 2:
        return batch
    return {k: (v.reshape(-1, *v.shape[2:]) if k in PAIR_KEYS else v) for k, v in batch.items()}


def decode(model, embeddings, class_ids, *, key=None, noise=None, compute_dtype=jnp.float32
           ) -> AutoMedSamOutput:
    """:meth:`AutoMedSAM.decode` with the class prompt encoder and decoder in
    ``compute_dtype`` (their float32 weights cast inside the call); outputs float32."""
    cast = with_dtype(model, compute_dtype)
    if noise is not None:
        noise = noise.astype(compute_dtype)
    out = cast.decode(embeddings.astype(compute_dtype), class_ids, key=key, noise=noise)
    return AutoMedSamOutput(*(None if x is None else x.astype(jnp.float32) for x in out))


@register
class ClassRoute(Route):
    name = "class"
    parts = ("class_prompt",)

    def new_parts(self, cfg, seed, abstract):
        return {"class_prompt_encoder": class_prompt_encoder(cfg, seed, abstract)}

    def trainable(self, train_decoder: bool):
        return TRAINABLE if train_decoder else FROZEN_DECODER

    def loss(self, trainee, embeddings, batch, key, *, compute_dtype, negatives):
        """The joint loss (docs/method.md#losses). ``key`` draws the diffusion noise unless the
        batch carries it as ``noise`` ``(B, g, g, C)`` (``(B, K, g, g, C)`` for all classes)."""
        model, noise = trainee.model, batch.get("noise")
        out = decode(model, embeddings, batch["class_id"], key=None if noise is not None else key,
                     noise=noise, compute_dtype=compute_dtype)
        pairs = flatten_pairs(batch)
        return joint_loss(out, pairs, model.teacher(pairs["box"]), trainee.loss_weights,
                          negatives)

    def prompts(self, model, proposal, record, class_ids, input_size):
        return class_ids, np.ones(class_ids.size, bool), None

    def masks(self, model, embeddings, prompts, class_ids):
        low = model.decode(embeddings, prompts).low_res_logits
        return low.reshape(*prompts.shape, *low.shape[1:])
