"""Backend choices: how a layer is computed on each platform, and the switches that choose.

The model's functions are the same everywhere; a few layers are *computed* another way where
XLA lowers them for a CPU, because XLA:CPU runs their native op badly. The choice is
:func:`per_backend` (``jax.lax.platform_dependent``), made when XLA lowers the function, so a
CPU formulation never reaches a GPU or TPU. Every formulation is equal to its native op up to
float rounding (``tests/test_cpu_rewrites.py``, forward and gradients). Arrays are
channels-last: activations ``(B, H, W, C)``, convolution kernels HWIO ``(kh, kw, cin, cout)``.

CPU formulations (CPU lowering only; GPU and TPU lowerings keep the native op):

* :func:`depthwise_conv_shifted` — replaces the grouped convolution of a depthwise
  ``nn.Conv2d(c, c, k, groups=c)`` (``modeling.common.DepthwiseConv``) by k² shifted
  multiply-adds, which fuse into one loop (~7× faster on XLA:CPU).
* :func:`pointwise_conv_as_dot` — replaces a 1×1 convolution (``modeling.common.PointwiseConv``)
  by the matmul ``(B·H·W, cin) × (cin, cout)`` (2–4× faster).
* :func:`conv_transpose_2x2_as_dot` — replaces the stride-2 2×2 transposed convolution
  (``modeling.common.ConvTranspose2x2``, XLA: a convolution over a zero-dilated input and a
  slow dilated weight gradient) by one matmul ``(B·H·W, cin) × (cin, 4·cout)`` and a pixel
  shuffle.
* :func:`fold_batch_norm` — TinyViT's ``Conv2d_BN`` (``modeling.tiny_vit``): the frozen
  BatchNorm folded into the conv's kernel and bias (TinyViT's own ``fuse``) instead of
  ``bn(conv(x))``, sparing a pass over the activation.
* :func:`gelu_erf` — exact GELU as PyTorch's ``x·½·(1 + erf(x/√2))`` instead of
  ``jax.nn.gelu(approximate=False)``, whose ``erfc`` XLA:CPU computes in three passes.
* :func:`image_by_image` — a batch through a function one image at a time (``lax.map``)
  instead of all at once: XLA:CPU is memory-bound on a batch's full-resolution activations. The
  frozen TinyViT encoder and evaluation's per-slice model call.

Attention (:func:`attention`, choices :data:`ATTENTION_IMPLEMENTATIONS`): ``"auto"`` is cuDNN's
fused flash attention (``jax.nn.dot_product_attention(implementation="cudnn")``) on CUDA GPUs
for bf16/fp16 inputs whose shapes it accepts, else the layer's XLA formulation
(``modeling.common.attention``); ``"xla"`` never uses cuDNN.

Switches: :func:`backend_options` only; nothing read from the environment. Both are read when
a function is traced, so they must enclose the ``jax.jit`` call that traces (compiles) it.

Counters: :data:`ATTENTION_CALLS`, the attention calls traced with each implementation.

This module imports only JAX and the standard library (it sits below the model code).
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

ATTENTION_IMPLEMENTATIONS = ("auto", "xla")
"""The choices of :func:`backend_options`'s ``attention``."""

ATTENTION_CALLS: collections.Counter = collections.Counter()
"""How many attention calls were traced with each implementation (``"cudnn"``/``"xla"``), for
benchmarks to report; clear it before tracing a function of interest."""

_cpu_rewrites = True
_attention = "auto"


@contextlib.contextmanager
def backend_options(cpu_rewrites: bool = True, attention: str = "auto"):
    """Within the block, functions are traced with the CPU formulations on (``cpu_rewrites``;
    off: the native op of every layer on every platform, the computation as written, e.g. for
    counting a model's FLOPs as PyTorch computes it) and attention computed by ``attention``
    (one of :data:`ATTENTION_IMPLEMENTATIONS`). The previous options come back on exit. Outside
    any block: rewrites on, ``"auto"``."""
    global _cpu_rewrites, _attention
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
                         f"got {attention!r}")
    saved = _cpu_rewrites, _attention
    _cpu_rewrites, _attention = bool(cpu_rewrites), attention
    try:
        yield
    finally:
        _cpu_rewrites, _attention = saved


def per_backend(cpu: Callable, native: Callable, *args):
    """``cpu(*args)`` where the computation is lowered for a CPU, ``native(*args)`` for every
    other platform (GPU, TPU), decided when XLA lowers the function; ``native(*args)``
    everywhere under ``backend_options(cpu_rewrites=False)``. Tested without a GPU by exporting
    for ``"cuda"`` (``jax.export``) and reading the lowered module."""
    if not _cpu_rewrites:
        return native(*args)
    return jax.lax.platform_dependent(*args, cpu=cpu, default=native)


def image_by_image(fn: Callable, in_axes: int | None | Sequence[int | None] = 0) -> Callable:
    """``fn`` run one image at a time on a CPU (``lax.map``, :func:`per_backend`), on the whole
    batch elsewhere. ``in_axes`` as ``jax.vmap``'s, 0 or None only: arguments at 0 are pytrees
    whose leaves share a leading batch axis ``B`` and are split along it (``fn`` sees batches of
    one), arguments at None (weights, a model's state) are passed whole; ``fn`` returns a pytree
    whose leaves have the leading axis ``B``. A batch of one is never looped over.

    XLA:CPU is memory-bound on a batch's full-resolution activations (TinyViT's first stage
    holds 256²×256 floats per image); one image's stay in cache (1.3–1.6× faster per image,
    ``benchmarks/eval_speed.py``). Meant for functions that are never differentiated (the
    frozen encoders, evaluation): XLA:CPU runs the loop's backward slowly."""
    def run(*args):
        axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args) or any(a not in (0, None) for a in axes):
            raise ValueError(f"in_axes must be 0 or None for each of the {len(args)} "
                             f"arguments, got {in_axes!r}")
        mapped = [i for i, a in enumerate(axes) if a == 0]
        sizes = {leaf.shape[0] for i in mapped for leaf in jax.tree.leaves(args[i])}
        if len(sizes) != 1:
            raise ValueError(f"the mapped arguments need one leading batch size, got {sizes}")
        if sizes == {1}:
            return fn(*args)

        def looped(*args):
            def one(items):
                full = list(args)
                for i, item in zip(mapped, items):
                    full[i] = jax.tree.map(lambda a: a[None], item)
                return jax.tree.map(lambda y: y[0], fn(*full))
            return jax.lax.map(one, tuple(args[i] for i in mapped))
        return per_backend(looped, fn, *args)
    return run


# -- the CPU formulations ------------------------------------------------------------------


def gelu_erf(x: jax.Array) -> jax.Array:
    """Exact GELU as PyTorch writes it, ``x·½·(1 + erf(x/√2))``."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                           strides: Sequence[int],
                           padding: Sequence[tuple[int, int]]) -> jax.Array:
    """A depthwise convolution of ``x`` ``(B, H, W, C)`` with ``kernel`` ``(kh, kw, 1, C)``,
    explicit ``padding`` ``((top, bottom), (left, right))`` and ``strides`` ``(sh, sw)``, as
    the sum of the kh·kw strided shifted slices times their taps: ``(B, H', W', C)``."""
    (pt, pb), (pl, pr) = padding
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    h, w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = sum(x[:, i:i + sh * (h - 1) + 1:sh, j:j + sw * (w - 1) + 1:sw] * kernel[i, j, 0]
              for i in range(kh) for j in range(kw))
    return out if bias is None else out + bias


def pointwise_conv_as_dot(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                          precision=None) -> jax.Array:
    """A 1×1 convolution (stride 1, no padding, one group) of ``x`` ``(B, H, W, cin)`` with
    ``kernel`` ``(1, 1, cin, cout)``, as one dot over the channels: ``(B, H, W, cout)``."""
    y = jnp.einsum("bhwc,co->bhwo", x, kernel[0, 0], precision=precision)
    return y if bias is None else y + bias


def conv_transpose_2x2_as_dot(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                              precision=None) -> jax.Array:
    """``nn.ConvTranspose2d(cin, cout, 2, stride=2)`` of ``x`` ``(B, H, W, cin)`` with Flax's
    ``kernel`` ``(2, 2, cin, cout)`` (spatially flipped relative to PyTorch's) →
    ``(B, 2H, 2W, cout)``. The 2×2 windows never overlap: output pixel ``(2i + p, 2j + q)`` is
    input pixel ``(i, j)`` times tap ``(1 − p, 1 − q)``, so it is one dot and a pixel shuffle."""
    b, h, w, _ = x.shape
    y = jnp.einsum("bhwc,pqco->bhpwqo", x, kernel[::-1, ::-1], precision=precision)
    y = y.reshape(b, 2 * h, 2 * w, kernel.shape[-1])
    return y if bias is None else y + bias


def fold_batch_norm(kernel: jax.Array, mean: jax.Array, var: jax.Array, scale: jax.Array,
                    bias: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """A bias-free conv's HWIO ``kernel`` followed by an inference BatchNorm over its ``cout``
    output channels (running ``mean``/``var``, affine ``scale``/``bias``, all ``(cout,)``) as
    one conv: kernel ``W·s`` and bias ``β − μ·s`` with ``s = γ/√(σ² + ε)``."""
    s = scale / jnp.sqrt(var + eps)
    return kernel * s, bias - mean * s


# -- attention -----------------------------------------------------------------------------


def _cudnn_ok(q: jax.Array, k: jax.Array, bias: jax.Array | None) -> bool:
    """Shapes and dtypes that cuDNN's fused attention (as wrapped by JAX) accepts."""
    if _attention == "xla" or q.dtype not in (jnp.bfloat16, jnp.float16):
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


def attention(xla: Callable, q: jax.Array, k: jax.Array, v: jax.Array,
              bias: jax.Array | None, scale: float) -> jax.Array:
    """softmax(q·kᵀ·scale + bias)·v for ``(B, T, h, d)`` queries and ``(B, S, h, d)`` keys and
    values, ``bias`` broadcasting to ``(B, h, T, S)``: cuDNN's fused attention where the
    ``attention`` option, the platform and the inputs allow it (see the module docstring), else
    ``xla(q, k, v, bias, scale)``. Each call is counted in :data:`ATTENTION_CALLS`."""
    if _cudnn_ok(q, k, bias):
        try:
            out = jax.nn.dot_product_attention(
                q, k, v, None if bias is None else jnp.broadcast_to(
                    bias, (q.shape[0], q.shape[2], q.shape[1], k.shape[1])).astype(q.dtype),
                scale=scale, implementation="cudnn")
            ATTENTION_CALLS["cudnn"] += 1
            return out
        except (NotImplementedError, ValueError, RuntimeError):
            pass  # an unsupported pattern: the XLA formulation
    ATTENTION_CALLS["xla"] += 1
    return xla(q, k, v, bias, scale)
