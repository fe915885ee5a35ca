"""The diffusion class prompt encoder as a refiner of a box prompt (beyond the paper;
docs/method.md#refiner): AutoMedSAM's own part on top of the localiser.

The localiser's box of class c gives the starting prompt — the frozen SAM prompt encoder's
sparse box embedding ``(B, 2, C)`` and its dense ``no_mask_embed`` ``(B, g, g, C)``, exactly what
a box-prompted MedSAM decodes. The :class:`~.class_prompt_encoder.ClassPromptEncoder` sees the
image embedding, the class and the box (as a ``(B, g, g, 1)`` map of the fraction of each cell the
box covers, one more input channel) and returns a correction of each prompt through a 1×1
projection initialised to zero (ControlNet's zero convolution): an untrained refiner gives the
box prompt itself, and training moves away from it only as far as the joint loss asks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ..config import ClassPromptConfig
from .class_prompt_encoder import ClassPromptEncoder, init_class_prompt_encoder
from .common import conv2d, linear


def box_map(boxes: jax.Array, grid: int, input_size: int) -> jax.Array:
    """``(B, 4)`` input-frame boxes ``x0, y0, x1, y1`` → ``(B, g, g, 1)``: the fraction of each
    of the ``grid × grid`` cells (``input_size / grid`` px wide) that the box covers."""
    cell = input_size / grid
    lo = jnp.arange(grid, dtype=jnp.float32) * cell

    def cover(a, b):  # (B,) interval → (B, g) covered fraction of each cell
        return jnp.clip(jnp.minimum(lo + cell, b[:, None]) - jnp.maximum(lo, a[:, None]),
                        0.0, cell) / cell

    boxes = boxes.astype(jnp.float32)
    ys, xs = cover(boxes[:, 1], boxes[:, 3]), cover(boxes[:, 0], boxes[:, 2])
    return (ys[:, :, None] * xs[:, None, :])[..., None]


class PromptRefiner(nnx.Module):
    """``class_prompt_encoder`` (one extra input channel: the box map) and the zero-initialised
    projections ``sparse_out`` (Linear C→C) and ``dense_out`` (Conv 1×1 C→C)."""

    def __init__(self, cfg: ClassPromptConfig, embed_dim: int, grid: int, input_size: int, *,
                 rngs: nnx.Rngs):
        self.grid, self.input_size = grid, input_size
        self.class_prompt_encoder = ClassPromptEncoder(cfg, embed_dim, grid, rngs=rngs, extra=1)
        self.sparse_out = linear(embed_dim, embed_dim, rngs=rngs)
        self.dense_out = conv2d(embed_dim, embed_dim, 1, rngs=rngs)

    def __call__(self, embedding: jax.Array, class_id: jax.Array, boxes: jax.Array,
                 start: tuple[jax.Array, jax.Array], *, key: jax.Array | None = None,
                 noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(B, g, g, C)`` embeddings, ``(B,)`` class ids, ``(B, 4)`` input-frame boxes and
        their starting prompts ``start`` = (sparse ``(B, 2, C)``, dense ``(B, g, g, C)``) →
        the refined (sparse, dense). ``key``/``noise``: the class prompt encoder's diffusion
        (:meth:`ClassPromptEncoder.__call__`; neither: deterministic)."""
        sparse, dense = self.class_prompt_encoder(
            embedding, class_id, key=key, noise=noise,
            extra=box_map(boxes, self.grid, self.input_size))
        s0, d0 = start
        out_s = s0 if sparse is None else s0 + self.sparse_out(sparse).astype(s0.dtype)
        out_d = d0 if dense is None else d0 + self.dense_out(dense).astype(d0.dtype)
        return out_s, out_d


def init_prompt_refiner(cfg: ClassPromptConfig, embed_dim: int, grid: int, input_size: int,
                        seed: int = 0) -> PromptRefiner:
    """A fresh refiner: the class prompt encoder with PyTorch's default init
    (:func:`~.class_prompt_encoder.init_class_prompt_encoder`), the projections at zero."""
    module = nnx.eval_shape(lambda: PromptRefiner(cfg, embed_dim, grid, input_size,
                                                  rngs=nnx.Rngs(0)))
    module.class_prompt_encoder = init_class_prompt_encoder(cfg, embed_dim, grid, seed, extra=1)
    for layer in (module.sparse_out, module.dense_out):
        layer.kernel.set_value(jnp.zeros(layer.kernel.shape, jnp.float32))
        layer.bias.set_value(jnp.zeros(layer.bias.shape, jnp.float32))
    return module
