"""SAM's two-way transformer (tokens ↔ image) in Flax NNX.

Image tokens are the flattened ``(B, g·g, C)`` embedding grid (row-major over h, w); prompt tokens
are ``(B, N, C)``.
"""

from __future__ import annotations

import jax
from flax import nnx

from ..config import DecoderConfig
from .common import MLPBlock, attention, layer_norm, linear


class Attention(nnx.Module):
    """Multi-head attention with separate q/k/v projections to ``dim / downsample_rate``."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1, *, rngs: nnx.Rngs):
        internal = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = linear(dim, internal, rngs=rngs)
        self.k_proj = linear(dim, internal, rngs=rngs)
        self.v_proj = linear(dim, internal, rngs=rngs)
        self.out_proj = linear(internal, dim, rngs=rngs)

    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        def heads(x):
            return x.reshape(*x.shape[:2], self.num_heads, -1)  # (B, N, h, d)

        q, k, v = heads(self.q_proj(q)), heads(self.k_proj(k)), heads(self.v_proj(v))
        out = attention(q, k, v, scale=q.shape[-1] ** -0.5)
        return self.out_proj(out.reshape(*out.shape[:2], -1))


class TwoWayAttentionBlock(nnx.Module):
    """Token self-attention, token→image cross-attention, MLP, image→token cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int,
                 skip_first_layer_pe: bool, *, rngs: nnx.Rngs):
        self.self_attn = Attention(dim, num_heads, rngs=rngs)
        self.norm1 = layer_norm(dim, 1e-5, rngs=rngs)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate, rngs=rngs)
        self.norm2 = layer_norm(dim, 1e-5, rngs=rngs)
        self.mlp = MLPBlock(dim, mlp_dim, act=jax.nn.relu, rngs=rngs)
        self.norm3 = layer_norm(dim, 1e-5, rngs=rngs)
        self.norm4 = layer_norm(dim, 1e-5, rngs=rngs)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate, rngs=rngs)
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """``depth`` two-way blocks and a final token→image attention."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        dim = cfg.transformer_dim
        self.layers = nnx.List([
            TwoWayAttentionBlock(dim, cfg.num_heads, cfg.mlp_dim, cfg.attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0), rngs=rngs)
            for i in range(cfg.depth)])
        self.final_attn_token_to_image = Attention(dim, cfg.num_heads,
                                                   cfg.attention_downsample_rate, rngs=rngs)
        self.norm_final_attn = layer_norm(dim, 1e-5, rngs=rngs)

    def __call__(self, image_embedding: jax.Array, image_pe: jax.Array,
                 point_embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(B, g, g, C)`` image, its ``(B, g, g, C)`` encoding and ``(B, N, C)`` tokens →
        (tokens ``(B, N, C)``, image tokens ``(B, g·g, C)``)."""
        B, h, w, C = image_embedding.shape
        keys = image_embedding.reshape(B, h * w, C)
        key_pe = image_pe.reshape(B, h * w, C)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
