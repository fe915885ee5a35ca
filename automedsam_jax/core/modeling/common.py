"""Layers shared by every part (segment-anything's ``modeling/common.py``), channels-last (NHWC).

Names mirror PyTorch so that a reader holding a state dict finds each tensor: a PyTorch
``nn.Sequential`` is a :class:`Sequential` whose items keep their indices (activations included),
``LayerNorm2d`` on NCHW is an ordinary LayerNorm over the last axis here. Where a layer is
computed another way on a CPU, or by cuDNN, :mod:`automedsam_jax.core.backend` holds that form
and makes the choice.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from .. import backend


class Buffer(nnx.Variable):
    """A constant carried with the weights (PyTorch ``register_buffer``): saved, never trained."""


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *,
              scale: float) -> jax.Array:
    """softmax(q·kᵀ·scale + bias)·v for ``(B, T, h, d)`` queries and ``(B, S, h, d)`` keys and
    values (``jax.nn.dot_product_attention``'s layout); ``bias`` broadcasts to ``(B, h, T, S)``.

    cuDNN's fused flash attention where :func:`..backend.attention` chooses it (CUDA, bf16/fp16,
    the ``attention`` option of :func:`..backend.backend_options`). Otherwise the logits are
    computed head-major (``(B, h, T, d)`` operands, so every dot has leading batch dimensions),
    soft-maxed in float32, and the softmax normalisation is applied to the ``(T, d)`` output
    instead of the ``(T, S)`` probabilities. Equal to the textbook formula up to float rounding.
    """
    return backend.attention(_xla_attention, q, k, v, bias, scale)


def _xla_attention(q, k, v, bias, scale):
    """The XLA formulation of :func:`attention` (same layouts), under the named scope
    ``attention`` (which names its ops in profiles)."""
    f32 = jnp.float32
    with jax.named_scope("attention"):
        qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q * jnp.asarray(scale, q.dtype), k, v))
        # Dots in the input dtype (their transposes then stay bf16×bf16 under autodiff),
        # softmax statistics in float32.
        logits = backend.dot("bhqd,bhkd->bhqk", qt, kt).astype(f32)
        if bias is not None:
            logits = logits + bias.astype(f32)
        p = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
        out = backend.dot("bhqk,bhkd->bhqd", p.astype(v.dtype), vt).astype(f32)
        out = out / p.sum(axis=-1, keepdims=True)
        return jnp.swapaxes(out, 1, 2).astype(q.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()``; the tanh approximation breaks parity.
    ``jax.nn.gelu(approximate=False)``, on a CPU :func:`..backend.gelu_erf`."""
    return backend.per_backend(backend.gelu_erf,
                               functools.partial(jax.nn.gelu, approximate=False), x)


class GELU(nnx.Module):
    """Parameter-free GELU, so ``Sequential`` indices match PyTorch's."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu(x)


class ReLU(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class Sequential(nnx.List):
    """``nn.Sequential``: items at the same integer indices, applied in order."""

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self:
            x = layer(x)
        return x


def layer_norm(dim: int, eps: float, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over the last axis with PyTorch's numerics (two-pass variance)."""
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


def layer_norm_2d(dim: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """SAM's ``LayerNorm2d`` (eps 1e-6) over channels; on NHWC that is the last axis."""
    return layer_norm(dim, 1e-6, rngs=rngs)


class Conv2d(nnx.Conv):
    """``nn.Conv2d`` on NHWC with an HWIO kernel: ``nnx.Conv``'s variables, computed by
    :meth:`apply`, which also takes a kernel and bias other than the stored ones (a folded
    BatchNorm, ``tiny_vit.Conv2d_BN``). Subclasses give a CPU formulation (``_cpu``, from
    :mod:`..backend`, chosen by :func:`..backend.per_backend`)."""

    _cpu = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.apply(x, self.kernel[...], None if self.bias is None else self.bias[...])

    def apply(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        if self._cpu is None:
            return self._native(x, kernel, bias)
        return backend.per_backend(self._cpu, self._native, x, kernel, bias)

    def _native(self, x, kernel, bias):
        y = jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding,
                                         feature_group_count=self.feature_group_count,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=self.precision)
        return y if bias is None else y + bias


class DepthwiseConv(Conv2d):
    """``nn.Conv2d(c, c, k, stride, padding, groups=c)``: the grouped convolution; on a CPU
    :func:`..backend.depthwise_conv_shifted` (k² shifted multiply-adds)."""

    def _cpu(self, x, kernel, bias):
        return backend.depthwise_conv_shifted(x, kernel, bias, self.strides, self.padding)


class PointwiseConv(Conv2d):
    """``nn.Conv2d(cin, cout, 1)``: the convolution; on a CPU
    :func:`..backend.pointwise_conv_as_dot` (the matmul ``(B·H·W, cin) × (cin, cout)``)."""

    def _cpu(self, x, kernel, bias):
        return backend.pointwise_conv_as_dot(x, kernel, bias, self.precision)


def conv2d(cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
           bias: bool = True, rngs: nnx.Rngs) -> Conv2d:
    """``nn.Conv2d`` with PyTorch's symmetric explicit padding (never Flax's 'SAME');
    depthwise (``groups == cin == cout``) as :class:`DepthwiseConv`, 1×1 (stride 1, no
    padding, one group) as :class:`PointwiseConv`."""
    if groups == cin == cout > 1:
        conv = DepthwiseConv
    elif kernel == stride == 1 and padding == 0 and groups == 1:
        conv = PointwiseConv
    else:
        conv = Conv2d
    return conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                padding=((padding, padding), (padding, padding)), feature_group_count=groups,
                use_bias=bias, rngs=rngs)


class ConvTranspose2x2(nnx.ConvTranspose):
    """``nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)``: doubles H and W (NHWC).

    The kernel is stored as Flax's ``(kh, kw, cin, cout)`` *spatially flipped* relative to
    PyTorch's ``(cin, cout, kh, kw)``; the converter does the flip. The 2×2 windows of a stride-2
    transposed convolution never overlap: output pixel ``(2i + p, 2j + q)`` is input pixel
    ``(i, j)`` times kernel tap ``(1 − p, 1 − q)``. On a CPU computed as that one matmul and a
    pixel shuffle (:func:`..backend.conv_transpose_2x2_as_dot`); the native op elsewhere.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return backend.per_backend(self._as_matmul, super().__call__, x)

    def _as_matmul(self, x: jax.Array) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        x, k, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        return backend.conv_transpose_2x2_as_dot(x, k, bias, self.precision)


def conv_transpose_2x2(cin: int, cout: int, *, rngs: nnx.Rngs) -> ConvTranspose2x2:
    """``nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)`` (:class:`ConvTranspose2x2`)."""
    return ConvTranspose2x2(cin, cout, (2, 2), strides=(2, 2), padding="VALID", rngs=rngs)


def linear(din: int, dout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """``nn.Linear(din, dout)``: ``nnx.Linear`` with its matmul through
    :func:`..backend.dot_general` (bf16 operands in the CPU form of bf16 compute)."""
    return nnx.Linear(din, dout, dot_general=backend.dot_general, rngs=rngs)


class MLPBlock(nnx.Module):
    """``lin2(act(lin1(x)))`` — the transformer MLP of SAM's encoder (GELU) and decoder (ReLU)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act=gelu, *, rngs: nnx.Rngs):
        self.lin1 = linear(embedding_dim, mlp_dim, rngs=rngs)
        self.lin2 = linear(mlp_dim, embedding_dim, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.lin2(self.act(self.lin1(x)))


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """``(B, H, W, C)`` → ``(B·nW, window, window, C)``, zero-padding H and W up to the window."""
    B, H, W, C = x.shape
    ph, pw = (-H) % window, (-W) % window
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    Hp, Wp = H + ph, W + pw
    x = x.reshape(B, Hp // window, window, Wp // window, window, C).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(windows: jax.Array, window: int, pad_hw: tuple[int, int],
                       hw: tuple[int, int]) -> jax.Array:
    """Inverse of :func:`window_partition`, cropping the padding: → ``(B, H, W, C)``."""
    (Hp, Wp), (H, W) = pad_hw, hw
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.reshape(B, Hp // window, Wp // window, window, window, -1)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W]
