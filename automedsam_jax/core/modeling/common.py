"""Layers shared by every part (segment-anything's ``modeling/common.py``), channels-last (NHWC).

Names mirror PyTorch so that a reader holding a state dict finds each tensor: a PyTorch
``nn.Sequential`` is a :class:`Sequential` whose items keep their indices (activations included),
``LayerNorm2d`` on NCHW is an ordinary LayerNorm over the last axis here.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os

import jax
import jax.numpy as jnp
from flax import nnx


class Buffer(nnx.Variable):
    """A constant carried with the weights (PyTorch ``register_buffer``): saved, never trained."""


# -- attention ---------------------------------------------------------------------------------
ATTENTION_IMPLEMENTATIONS = ("auto", "xla")
_attention_impl = os.environ.get("AUTOMEDSAM_ATTENTION", "auto")
ATTENTION_CALLS: collections.Counter = collections.Counter()
"""How many attention calls were traced with each implementation (``"cudnn"``/``"xla"``), for
benchmarks to report; reset it before tracing a function of interest."""


def set_attention_implementation(name: str) -> None:
    """``"auto"`` (default; or ``$AUTOMEDSAM_ATTENTION``): cuDNN flash attention through
    ``jax.nn.dot_product_attention`` on CUDA GPUs for bf16/fp16 inputs whose shapes it supports,
    else the XLA formulation of :func:`attention`; ``"xla"``: never cuDNN. Read at trace time:
    set it before ``jax.jit``."""
    global _attention_impl
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}")
    _attention_impl = name


def _cudnn_ok(q: jax.Array, k: jax.Array, bias: jax.Array | None) -> bool:
    """Shapes and dtypes that cuDNN's fused attention (as wrapped by JAX) accepts."""
    if _attention_impl == "xla" or q.dtype not in (jnp.bfloat16, jnp.float16):
        return False
    try:
        if jax.default_backend() != "gpu" or "cuda" not in jax.devices()[0].client.platform_version:
            return False
    except Exception:  # noqa: BLE001 - no GPU client: not cuDNN
        return False
    d = q.shape[-1]
    if d % 8 or d > 128 or k.shape[-1] != d:
        return False
    # With a bias, cuDNN's training kernels need even sequence lengths; keep it simple and
    # require them for every biased call.
    return bias is None or (q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None, *,
              scale: float) -> jax.Array:
    """softmax(q·kᵀ·scale + bias)·v for ``(B, T, h, d)`` queries and ``(B, S, h, d)`` keys and
    values (``jax.nn.dot_product_attention``'s layout); ``bias`` broadcasts to ``(B, h, T, S)``.

    On CUDA with bf16/fp16 inputs (see :func:`set_attention_implementation`) this is cuDNN's
    fused flash attention. Otherwise the logits are computed head-major (``(B, h, T, d)``
    operands, so every dot has leading batch dimensions), soft-maxed in float32, and the softmax
    normalisation is applied to the ``(T, d)`` output instead of the ``(T, S)`` probabilities.
    Equal to the textbook formula up to float rounding.
    """
    if _cudnn_ok(q, k, bias):
        try:
            out = jax.nn.dot_product_attention(
                q, k, v, None if bias is None else jnp.broadcast_to(
                    bias, (q.shape[0], q.shape[2], q.shape[1], k.shape[1])).astype(q.dtype),
                scale=scale, implementation="cudnn")
            ATTENTION_CALLS["cudnn"] += 1
            return out
        except (NotImplementedError, ValueError, RuntimeError):
            pass  # an unsupported pattern: the XLA formulation below
    ATTENTION_CALLS["xla"] += 1
    with jax.named_scope("attention"):  # names its ops in profiles
        return _xla_attention(q, k, v, bias, scale)


def _xla_attention(q, k, v, bias, scale):
    f32 = jnp.float32
    qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q * jnp.asarray(scale, q.dtype), k, v))
    # Dots in the input dtype (their transposes then stay bf16×bf16 under autodiff), softmax
    # statistics in float32.
    logits = jnp.einsum("bhqd,bhkd->bhqk", qt, kt).astype(f32)
    if bias is not None:
        logits = logits + bias.astype(f32)
    p = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
    out = jnp.einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), vt).astype(f32)
    out = out / p.sum(axis=-1, keepdims=True)
    return jnp.swapaxes(out, 1, 2).astype(q.dtype)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()``; the tanh approximation breaks parity. On a CPU
    PyTorch's formula ``x·½·(1 + erf(x/√2))``: ``jax.nn.gelu(approximate=False)`` (other
    platforms, :func:`per_backend`) goes through ``erfc``, which XLA:CPU computes in three
    passes over the tensor."""
    return per_backend(_gelu_erf, functools.partial(jax.nn.gelu, approximate=False), x)


def _gelu_erf(x: jax.Array) -> jax.Array:
    return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


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


# -- per-backend lowering ------------------------------------------------------------------
_cpu_rewrites = os.environ.get("AUTOMEDSAM_CPU_REWRITES", "1") != "0"


@contextlib.contextmanager
def native_ops():
    """Trace with the native form of every layer on every platform, the CPU included (no
    :func:`per_backend` rewrite; ``AUTOMEDSAM_CPU_REWRITES=0`` does the same for a whole
    process): the computation as written before the rewrites, for checking them and for
    counting a model's FLOPs as PyTorch computes it. Read at trace time."""
    global _cpu_rewrites
    saved, _cpu_rewrites = _cpu_rewrites, False
    try:
        yield
    finally:
        _cpu_rewrites = saved


def per_backend(cpu, native, *args):
    """``cpu(*args)`` where the computation is lowered for a CPU, ``native(*args)`` for every
    other platform (GPU, TPU): ``jax.lax.platform_dependent``, decided when XLA lowers the
    function, so a CPU-only formulation never reaches an accelerator. Tested without a GPU by
    exporting for ``"cuda"`` (``jax.export``) and reading the lowered module."""
    if not _cpu_rewrites:
        return native(*args)
    return jax.lax.platform_dependent(*args, cpu=cpu, default=native)


def image_by_image(fn, x: jax.Array) -> jax.Array:
    """``fn(x)`` on a ``(B, ...)`` batch; on a CPU one image at a time (``lax.map``,
    :func:`per_backend`): XLA:CPU is memory-bound on a batch's full-resolution activations
    (TinyViT's first stage holds 256²×256 floats per image), one image's stay in cache. For the
    frozen encoders, which are never differentiated: on XLA:CPU the loop's backward is slow."""
    if x.shape[0] == 1:
        return fn(x)

    def mapped(x):
        return jax.lax.map(lambda xi: fn(xi[None])[0], x)
    return per_backend(mapped, fn, x)


class Conv2d(nnx.Conv):
    """``nn.Conv2d`` on NHWC with an HWIO kernel: ``nnx.Conv``'s variables, computed by
    :meth:`apply`, which also takes a kernel and bias other than the stored ones (a folded
    BatchNorm, ``tiny_vit.Conv2d_BN``). Subclasses give a CPU formulation (``_cpu``)."""

    _cpu = None

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.apply(x, self.kernel[...], None if self.bias is None else self.bias[...])

    def apply(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        if self._cpu is None:
            return self._native(x, kernel, bias)
        return per_backend(self._cpu, self._native, x, kernel, bias)

    def _native(self, x, kernel, bias):
        y = jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding,
                                         feature_group_count=self.feature_group_count,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=self.precision)
        return y if bias is None else y + bias


class DepthwiseConv(Conv2d):
    """``nn.Conv2d(c, c, k, stride, padding, groups=c)``; on a CPU as k² shifted multiply-adds.

    Same result (up to float rounding) as the grouped convolution, which XLA on CPU runs ~7×
    slower than PyTorch; the shifted form fuses into one loop. Other platforms keep the
    grouped convolution (:func:`per_backend`).
    """

    def _cpu(self, x, kernel, bias):
        (pt, pb), (pl, pr) = self.padding
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        h, w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
        out = sum(x[:, i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw] * kernel[i, j, 0]
                  for i in range(kh) for j in range(kw))
        return out if bias is None else out + bias


class PointwiseConv(Conv2d):
    """``nn.Conv2d(cin, cout, 1)``; on a CPU as the matmul ``(B·H·W, cin) × (cin, cout)``.

    XLA:CPU runs a 1×1 convolution 2–4× slower than the same product as a dot
    (``benchmarks/profile_breakdown.py``: TinyViT's 1×1 convolutions at 256²). Other platforms
    keep the convolution (:func:`per_backend`).
    """

    def _cpu(self, x, kernel, bias):
        y = jnp.einsum("bhwc,co->bhwo", x, kernel[0, 0], precision=self.precision)
        return y if bias is None else y + bias


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
    ``(i, j)`` times kernel tap ``(1 − p, 1 − q)``. On a CPU it is computed as that one matmul
    ``(B·H·W, cin) × (cin, 4·cout)`` and a pixel shuffle; XLA:CPU runs the native form as a
    convolution over a zero-dilated input (4× the multiplies) and its weight gradient as a slow
    dilated convolution. Other platforms keep the native op (:func:`per_backend`).
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return per_backend(self._as_matmul, super().__call__, x)

    def _as_matmul(self, x: jax.Array) -> jax.Array:
        bias = None if self.bias is None else self.bias[...]
        x, k, bias = self.promote_dtype((x, self.kernel[...], bias), dtype=self.dtype)
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,pqco->bhpwqo", x, k[::-1, ::-1], precision=self.precision)
        y = y.reshape(b, 2 * h, 2 * w, k.shape[-1])
        return y if bias is None else y + bias


def conv_transpose_2x2(cin: int, cout: int, *, rngs: nnx.Rngs) -> ConvTranspose2x2:
    """``nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)`` (:class:`ConvTranspose2x2`)."""
    return ConvTranspose2x2(cin, cout, (2, 2), strides=(2, 2), padding="VALID", rngs=rngs)


class MLPBlock(nnx.Module):
    """``lin2(act(lin1(x)))`` — the transformer MLP of SAM's encoder (GELU) and decoder (ReLU)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act=gelu, *, rngs: nnx.Rngs):
        self.lin1 = nnx.Linear(embedding_dim, mlp_dim, rngs=rngs)
        self.lin2 = nnx.Linear(mlp_dim, embedding_dim, rngs=rngs)
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
