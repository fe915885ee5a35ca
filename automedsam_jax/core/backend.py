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

bf16 compute (:func:`bf16_compute`, the model's bf16 mode: the frozen encoder in
``embed_images``, the trained part in ``AutoMedSAM.decode``): natively on GPUs and TPUs (bf16
activations, matmuls and convolutions on bf16 operands). On a CPU in float32 with every matmul
(:func:`dot`, :func:`dot_general`) on bf16-rounded operands accumulated in float32
(:func:`bf16_dot`): XLA:CPU computes bf16 convolutions and element-wise ops in float32 anyway,
with a convert around each, and runs only matmuls of bf16 operands with a float32 result on its
bf16 kernels (``benchmarks/cpu_bf16.py``).

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
import functools
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
_bf16_dots = False  # tracing the CPU form of bf16_compute


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


# -- bf16 compute -----------------------------------------------------------------------------


def bf16_compute(fn: Callable, *args):
    """``fn(*args)`` for arguments whose floating leaves are bf16 (arrays; modules whose weights
    were cast to bf16), with ``fn``'s bf16 result, chosen by :func:`per_backend`: natively on a
    GPU or TPU; on a CPU in float32 — the bf16 leaves upcast (exact), ``fn`` traced with every
    :func:`dot`/:func:`dot_general` of float32 operands computed by :func:`bf16_dot`, and the
    result cast to the native result's dtypes (see the module docstring for why).
    :data:`ATTENTION_CALLS` counts the calls of one form: the CPU one where the default backend
    is a CPU (and the rewrites are on), else the native one."""
    before = ATTENTION_CALLS.copy()
    out_types = jax.eval_shape(fn, *args)
    counts = {"native": ATTENTION_CALLS - before}

    def cpu(*args):
        global _bf16_dots
        up = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.bfloat16 else a, args)
        saved, _bf16_dots = _bf16_dots, True
        start = ATTENTION_CALLS.copy()
        try:
            out = fn(*up)
        finally:
            _bf16_dots = saved
            counts["cpu"] = ATTENTION_CALLS - start
        return jax.tree.map(lambda y, t: y.astype(t.dtype), out, out_types)
    out = per_backend(cpu, fn, *args)
    ATTENTION_CALLS.clear()
    ATTENTION_CALLS.update(before + counts.get("cpu" if jax.default_backend() == "cpu" else
                                               "native", counts["native"]))
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def bf16_dot(spec: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """``jnp.einsum(spec, x, w)`` of float32 ``x``, ``w`` on their bf16 roundings, accumulated
    in float32 (a float32 result). Gradients: ``x``'s (a matmul of the result's gradient and
    ``w``) likewise on bf16 operands; ``w``'s, which contracts over ``x``'s rows (tokens,
    pixels), in float32: XLA:CPU's bf16 kernel does not take that contraction and would convert
    both operands to float32. ``spec``: two operands, each of whose indices appears in the other
    or in the result."""
    return jnp.einsum(spec, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                      preferred_element_type=jnp.float32)


def _bf16_dot_fwd(spec, x, w):
    return bf16_dot(spec, x, w), (x, w)


def _bf16_dot_bwd(spec, res, g):
    x, w = res
    (a, b), out = spec.split("->")[0].split(","), spec.split("->")[1]
    dx = jnp.einsum(f"{out},{b}->{a}", g.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)
    return dx, jnp.einsum(f"{a},{out}->{b}", x, g)


bf16_dot.defvjp(_bf16_dot_fwd, _bf16_dot_bwd)


def dot(spec: str, x: jax.Array, w: jax.Array, precision=None) -> jax.Array:
    """``jnp.einsum(spec, x, w, precision=precision)``, the model's matmuls other than its
    ``nnx.Linear`` layers (:func:`dot_general`); :func:`bf16_dot` of float32 operands while the
    CPU form of :func:`bf16_compute` is traced."""
    if _bf16_dots and x.dtype == w.dtype == jnp.float32:
        return bf16_dot(spec, x, w)
    return jnp.einsum(spec, x, w, precision=precision)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None, **kwargs):
    """``jax.lax.dot_general``, as the model's ``nnx.Linear`` layers call it
    (``modeling.common.linear``); their ``x @ W`` by :func:`bf16_dot` of float32 operands while
    the CPU form of :func:`bf16_compute` is traced."""
    if (_bf16_dots and lhs.dtype == rhs.dtype == jnp.float32 and rhs.ndim == 2
            and dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ()))):
        return bf16_dot("...i,io->...o", lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


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
    y = dot("bhwc,co->bhwo", x, kernel[0, 0], precision)
    return y if bias is None else y + bias


def conv_transpose_2x2_as_dot(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                              precision=None) -> jax.Array:
    """``nn.ConvTranspose2d(cin, cout, 2, stride=2)`` of ``x`` ``(B, H, W, cin)`` with Flax's
    ``kernel`` ``(2, 2, cin, cout)`` (spatially flipped relative to PyTorch's) →
    ``(B, 2H, 2W, cout)``. The 2×2 windows never overlap: output pixel ``(2i + p, 2j + q)`` is
    input pixel ``(i, j)`` times tap ``(1 − p, 1 − q)``, so it is one dot and a pixel shuffle."""
    b, h, w, _ = x.shape
    y = dot("bhwc,pqco->bhpwqo", x, kernel[::-1, ::-1], precision)
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
