"""SAM's ViT image encoder (``ImageEncoderViT``) in Flax NNX, channels-last.

Input ``(B, S, S, 3)`` in the input frame (S = ``img_size``, 1024 for SAM/MedSAM), output the image
embedding ``(B, S/16, S/16, out_chans)`` = ``(B, 64, 64, 256)`` at full size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import backend
from ..config import ViTConfig
from .common import (MLPBlock, Sequential, attention, conv2d, layer_norm, layer_norm_2d, linear,
                     window_partition, window_unpartition)


class PatchEmbed(nnx.Module):
    """Non-overlapping ``patch × patch`` conv: ``(B, S, S, 3) → (B, S/p, S/p, dim)``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.proj = conv2d(in_chans, embed_dim, patch_size, stride=patch_size, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


def get_rel_pos(q_size: int, k_size: int, rel_pos: jax.Array) -> jax.Array:
    """Relative-position rows for every (query, key) pair along one axis: ``(q_size, k_size, C)``.

    SAM interpolates ``rel_pos`` when its length differs from ``2·max(q, k) − 1``; every SAM
    checkpoint stores the exact length, so a mismatch is an error here.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        raise ValueError(f"rel_pos has {rel_pos.shape[0]} rows, expected {max_rel_dist}")
    q_coords = jnp.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = jnp.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.astype(jnp.int32)]


class Attention(nnx.Module):
    """Multi-head self-attention over an ``(B, H, W, C)`` grid with decomposed rel-pos bias."""

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int], *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = linear(dim, dim * 3, rngs=rngs)
        self.proj = linear(dim, dim, rngs=rngs)
        self.rel_pos_h = nnx.Param(jnp.zeros((2 * input_size[0] - 1, head_dim)))
        self.rel_pos_w = nnx.Param(jnp.zeros((2 * input_size[1] - 1, head_dim)))

    def __call__(self, x: jax.Array) -> jax.Array:
        B, H, W, C = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(B, H, W, 3, nh, C // nh)
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]  # (B, H, W, nh, d)
        Rh = get_rel_pos(H, H, self.rel_pos_h[...]).astype(q.dtype)  # (H, H', d)
        Rw = get_rel_pos(W, W, self.rel_pos_w[...]).astype(q.dtype)  # (W, W', d)
        rel_h = backend.dot("bhwnc,hkc->bnhwk", q, Rh)
        rel_w = backend.dot("bhwnc,wkc->bnhwk", q, Rw)
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, nh, H * W, H * W)
        out = attention(*(x.reshape(B, H * W, nh, C // nh) for x in (q, k, v)), bias,
                        scale=self.scale)
        return self.proj(out.reshape(B, H, W, C))


class Block(nnx.Module):
    """Pre-norm transformer block; windowed attention when ``window_size > 0``, else global."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 input_size: tuple[int, int], *, rngs: nnx.Rngs):
        self.norm1 = layer_norm(dim, 1e-6, rngs=rngs)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, attn_size, rngs=rngs)
        self.norm2 = layer_norm(dim, 1e-6, rngs=rngs)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), rngs=rngs)
        self.window_size = window_size

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1:3]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, (H, W))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nnx.Module):
    """``(B, S, S, 3)`` input frame → ``(B, S/16, S/16, out_chans)`` image embedding."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs):
        self.img_size = cfg.img_size
        g = cfg.embedding_size
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim, rngs=rngs)
        self.pos_embed = nnx.Param(jnp.zeros((1, g, g, cfg.embed_dim)))
        self.blocks = nnx.List([
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                  0 if i in cfg.global_attn_indexes else cfg.window_size, (g, g), rngs=rngs)
            for i in range(cfg.depth)])
        self.neck = Sequential([
            conv2d(cfg.embed_dim, cfg.out_chans, 1, bias=False, rngs=rngs),
            layer_norm_2d(cfg.out_chans, rngs=rngs),
            conv2d(cfg.out_chans, cfg.out_chans, 3, padding=1, bias=False, rngs=rngs),
            layer_norm_2d(cfg.out_chans, rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.patch_embed(x) + self.pos_embed[...]
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x)
