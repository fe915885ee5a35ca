"""SAM's prompt encoder in Flax NNX: points, boxes and masks → sparse and dense embeddings.

Coordinates are ``x, y`` pixels in the *input frame* (S × S, S = 1024 or 256). Dense outputs are
channels-last ``(B, 64, 64, C)`` at full size.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ..config import DecoderConfig
from .common import GELU, Buffer, Sequential, conv2d, layer_norm_2d


class PositionEmbeddingRandom(nnx.Module):
    """Random-Fourier positional encoding with a fixed Gaussian matrix ``(2, C/2)`` (a buffer)."""

    def __init__(self, num_pos_feats: int, *, rngs: nnx.Rngs):
        self.positional_encoding_gaussian_matrix = Buffer(
            jax.random.normal(rngs.params(), (2, num_pos_feats)))

    def _pe_encoding(self, coords: jax.Array) -> jax.Array:
        """Encode points normalised to [0, 1]: ``(..., 2) → (..., C)``."""
        gaussian = self.positional_encoding_gaussian_matrix[...]
        coords = (2 * coords - 1).astype(gaussian.dtype) @ gaussian
        coords = 2 * math.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def __call__(self, size: tuple[int, int]) -> jax.Array:
        """Encoding of every pixel centre of an ``(h, w)`` grid: ``(h, w, C)``."""
        h, w = size
        y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self._pe_encoding(grid)

    def forward_with_coords(self, coords: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        """Encode ``(..., 2)`` ``x, y`` pixel coordinates of an ``(H, W)`` image."""
        coords = coords / jnp.array([image_size[1], image_size[0]], coords.dtype)
        return self._pe_encoding(coords.astype(jnp.float32))


class PromptEncoder(nnx.Module):
    """Points, boxes (input-frame pixels) and low-res masks → (sparse ``(B, N, C)``, dense
    ``(B, g, g, C)``) prompt embeddings, with ``g`` the image-embedding side."""

    def __init__(self, cfg: DecoderConfig, image_embedding_size: int, input_image_size: int,
                 *, rngs: nnx.Rngs):
        dim, mc = cfg.transformer_dim, cfg.mask_in_chans
        self.embed_dim = dim
        self.image_embedding_size = (image_embedding_size, image_embedding_size)
        self.input_image_size = (input_image_size, input_image_size)
        self.pe_layer = PositionEmbeddingRandom(dim // 2, rngs=rngs)
        self.point_embeddings = nnx.List([nnx.Embed(1, dim, rngs=rngs) for _ in range(4)])
        self.not_a_point_embed = nnx.Embed(1, dim, rngs=rngs)
        self.mask_downscaling = Sequential([
            conv2d(1, mc // 4, 2, stride=2, rngs=rngs), layer_norm_2d(mc // 4, rngs=rngs), GELU(),
            conv2d(mc // 4, mc, 2, stride=2, rngs=rngs), layer_norm_2d(mc, rngs=rngs), GELU(),
            conv2d(mc, dim, 1, rngs=rngs),
        ])
        self.no_mask_embed = nnx.Embed(1, dim, rngs=rngs)

    def get_dense_pe(self) -> jax.Array:
        """Positional encoding of the image-embedding grid: ``(1, g, g, C)``."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """``(B, N, 2)`` points with labels 1 (foreground), 0 (background), −1 (padding)."""
        points = points + 0.5  # pixel centres
        if pad:
            points = jnp.concatenate([points, jnp.zeros((points.shape[0], 1, 2), points.dtype)], 1)
            labels = jnp.concatenate([labels, -jnp.ones((labels.shape[0], 1), labels.dtype)], 1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        emb = jnp.where(labels == -1, self.not_a_point_embed.embedding[...][0], emb)
        emb = emb + jnp.where(labels == 0, self.point_embeddings[0].embedding[...][0], 0.0)
        emb = emb + jnp.where(labels == 1, self.point_embeddings[1].embedding[...][0], 0.0)
        return emb

    def _embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """``(B, 4)`` boxes ``x0, y0, x1, y1`` → two corner tokens ``(B, 2, C)``."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corners = jnp.stack([self.point_embeddings[2].embedding[...][0],
                             self.point_embeddings[3].embedding[...][0]])
        return emb + corners

    def __call__(self, points: tuple[jax.Array, jax.Array] | None = None,
                 boxes: jax.Array | None = None,
                 masks: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Any of: ``points = (coords (B, N, 2), labels (B, N))``, ``boxes (B, 4)``,
        ``masks (B, 4g, 4g, 1)`` low-res logits. Returns ``(B, N', C)`` and ``(B, g, g, C)``."""
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        sparse = [jnp.zeros((bs, 0, self.embed_dim))]
        if points is not None:
            sparse.append(self._embed_points(*points, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse = jnp.concatenate(sparse, axis=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = jnp.broadcast_to(self.no_mask_embed.embedding[...][0],
                                     (bs, *self.image_embedding_size, self.embed_dim))
        return sparse, dense
