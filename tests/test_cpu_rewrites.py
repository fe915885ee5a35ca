"""The CPU-only formulations of ``core.backend`` (issue 14): each computes its layer's native
function — forward and gradients — and only a CPU lowering gets them; GPUs and TPUs keep the
native ops (and the encoders' whole batch, ``image_by_image``). The expectation is always XLA's
native op (``backend_options(cpu_rewrites=False)``), never the rewrite itself; the PyTorch
parity tests run with the rewrites on."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, LossConfig,
                                        SamConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights
from automedsam_jax.core import backend
from automedsam_jax.core.modeling import common
from automedsam_jax.core.modeling.tiny_vit import Conv2d_BN
from automedsam_jax.core.preprocess import mask_box
from automedsam_jax.data.sample import shape_distance_map
from automedsam_jax.train.optim import Trainee
from automedsam_jax.train.step import loss_and_terms, split_trainee

RTOL = 1e-5


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _layers():
    rngs = nnx.Rngs(0)
    bn = Conv2d_BN(8, 8, 3, 2, 1, groups=8, rngs=rngs)
    # Running statistics far from identity, so a wrong fold shows.
    bn.bn.mean[...] = jnp.linspace(-1.0, 1.0, 8)
    bn.bn.var[...] = jnp.linspace(0.5, 2.0, 8)
    bn.bn.scale[...] = jnp.linspace(0.5, 1.5, 8)
    bn.bn.bias[...] = jnp.linspace(-0.3, 0.3, 8)
    return {"depthwise 3×3": common.conv2d(8, 8, 3, padding=1, groups=8, rngs=rngs),
            "depthwise 3×3 stride 2": common.conv2d(8, 8, 3, stride=2, padding=1, groups=8,
                                                    rngs=rngs),
            "pointwise": common.conv2d(8, 16, 1, rngs=rngs),
            "transposed 2×2": common.conv_transpose_2x2(8, 4, rngs=rngs),
            "conv + folded BatchNorm": bn,
            "GELU": common.GELU()}


@pytest.mark.parametrize("name", list(_layers()))
def test_each_rewrite_computes_the_native_function(name):
    layer = _layers()[name]
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 9, 7, 8)), jnp.float32) * 2

    def loss(params, x):
        y = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum(jnp.sin(y)), y

    def run():  # a new function each time: traced afresh under the current setting
        return jax.jit(jax.value_and_grad(lambda p, x: loss(p, x), argnums=(0, 1),
                                          has_aux=True))(params, x)

    with jax.default_matmul_precision("highest"):
        (_, y), grads = run()
        with backend.backend_options(cpu_rewrites=False):
            (_, y_ref), grads_ref = run()
    assert y.shape == y_ref.shape
    assert _rel(y, y_ref) < RTOL, name
    flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
    assert len(flat) == len(flat_ref) >= 1
    for g, g_ref in zip(flat, flat_ref):
        assert np.abs(np.asarray(g_ref)).max() > 0  # a gradient that can differ
        assert _rel(g, g_ref) < RTOL, name


def _batch(cfg: AutoMedSamConfig, n: int = 2) -> dict:
    rs = np.random.RandomState(0)
    S, L = cfg.sam.image_size, cfg.sam.low_res_size
    g, C = cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    yy, xx = np.mgrid[:L, :L]
    masks = [(((yy - L * (0.4 + 0.1 * i)) / (0.2 * L)) ** 2
              + ((xx - L / 2) / (0.15 * L)) ** 2 <= 1).astype(np.float32) for i in range(n)]
    return {"image": jnp.asarray(rs.rand(n, S, S, 3).astype(np.float32)),
            "class_id": jnp.arange(1, n + 1, dtype=jnp.int32),
            "mask": jnp.asarray(np.stack(masks)),
            "box": jnp.asarray(np.stack([mask_box(m) * (S / L) for m in masks]), jnp.float32),
            "dist": jnp.asarray(np.stack([shape_distance_map(m) for m in masks])),
            "noise": jnp.asarray(rs.randn(n, g, g, C).astype(np.float32))}


@pytest.mark.slow
def test_tinyvit_embedding_matches_the_native_ops():
    """LiteMedSAM's encoder family (folded BatchNorms, depthwise and 1×1 convs, GELU) at its
    256² frame, tiny widths."""
    model = random_model(AutoMedSamConfig(SamConfig.preset("tiny_litemedsam"),
                                          TINY_CLASS_PROMPT), seed=0)
    x = jnp.asarray(np.random.RandomState(0).rand(2, 256, 256, 3).astype(np.float32))

    def run():
        return jax.jit(lambda m, x: m.embed(x))(model, x)

    with jax.default_matmul_precision("highest"):
        emb = run()
        with backend.backend_options(cpu_rewrites=False):
            emb_ref = run()
    assert _rel(emb, emb_ref) < RTOL


@pytest.mark.slow
def test_training_loss_and_gradients_match_the_native_ops():
    """The whole training function of a tiny AutoMedSAM (ViT encoder forward, class prompt
    encoder, decoder with its transposed convolutions, joint loss, every trained gradient)."""
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    graphdef, params, frozen = split_trainee(Trainee(random_model(cfg, seed=0),
                                                     LossWeights(LossConfig())))
    batch = _batch(cfg)

    def run():
        def f(params):
            trainee = nnx.merge(graphdef, params, frozen)
            return loss_and_terms(trainee, batch, jax.random.key(0), cached=False)[0]
        return jax.jit(jax.value_and_grad(f))(params)

    with jax.default_matmul_precision("highest"):
        loss, grads = run()
        with backend.backend_options(cpu_rewrites=False):
            loss_ref, grads_ref = run()
    assert abs(float(loss) - float(loss_ref)) <= RTOL * abs(float(loss_ref))
    leaves = jax.tree.leaves_with_path(grads)
    ref = dict(jax.tree.leaves_with_path(grads_ref))
    assert len(leaves) == len(ref) > 20
    # Gradients that are zero in exact arithmetic (a key projection's bias under softmax) are
    # rounding noise on both sides: compared against the largest gradient instead.
    scale = max(float(np.linalg.norm(np.asarray(v))) for v in ref.values())
    for path, g in leaves:
        diff = float(np.linalg.norm(np.asarray(g, np.float64) - np.asarray(ref[path], np.float64)))
        assert diff <= 1e-4 * float(np.linalg.norm(np.asarray(ref[path]))) + 1e-7 * scale, \
            jax.tree_util.keystr(path)


def test_only_a_cpu_lowering_gets_the_rewrites():
    """Lowered for CUDA or TPU (``jax.export``, no GPU needed), the same function holds the
    native grouped, 1×1 and input-dilated (transposed) convolutions and erfc's GELU; lowered
    for the CPU it holds dots, the shifted sum and erf instead."""
    layers = nnx.List(list(_layers().values()))
    graphdef, state = nnx.split(layers)

    def f(state, x):
        m = nnx.merge(graphdef, state)
        x = m[0](x)
        x = m[1](x)
        x = m[2](x)              # 8 → 16 channels
        x = m[3](x[..., :8])     # 8 → 4, twice the size
        return m[5](m[4](jnp.tile(x, (1, 1, 1, 2))))

    x = jnp.ones((1, 8, 8, 8), jnp.float32)
    text = {p: jax.export.export(jax.jit(f), platforms=[p])(state, x).mlir_module()
            for p in ("cpu", "cuda", "tpu")}
    for p in ("cuda", "tpu"):
        t = text[p]
        assert t.count("stablehlo.convolution") == 5, p
        assert len(re.findall(r"feature_group_count = 8", t)) == 3, p  # the depthwise ones
        assert "lhs_dilate" in t, p                                     # the transposed one
        assert "chlo.erf" not in t, p
    cpu = text["cpu"]
    assert cpu.count("stablehlo.convolution") == 0
    assert cpu.count("stablehlo.dot_general") == 2  # 1×1 and transposed
    assert "chlo.erf" in cpu
    # A batch through a frozen encoder: a loop over its images on a CPU only.
    x = jnp.ones((3, 4, 4, 2), jnp.float32)
    loop = {p: "stablehlo.while" in jax.export.export(
        jax.jit(backend.image_by_image(jnp.sin)), platforms=[p])(x).mlir_module()
        for p in ("cpu", "cuda")}
    assert loop == {"cpu": True, "cuda": False}


def test_image_by_image_passes_unmapped_arguments_whole():
    """``in_axes=(None, 0, 0)``: the first argument (a model's state) whole, the others one
    image at a time; the loop's result equals the batched call's, and a bad ``in_axes`` or
    ragged batch is refused."""
    rng = np.random.RandomState(0)
    w, x, p = (jnp.asarray(rng.rand(*s), jnp.float32) for s in ((4, 3), (5, 6, 4), (5, 3)))

    def fn(w, x, p):
        return {"y": jnp.einsum("bnc,co->bno", x, w) + p[:, None], "s": x.sum(axis=(1, 2))}
    looped = jax.jit(backend.image_by_image(fn, in_axes=(None, 0, 0)))(w, x, p)
    batched = fn(w, x, p)
    for k in batched:
        np.testing.assert_allclose(looped[k], batched[k], rtol=1e-6)
    with pytest.raises(ValueError, match="in_axes"):
        backend.image_by_image(fn, in_axes=(1, 0, 0))(w, x, p)
    with pytest.raises(ValueError, match="leading batch size"):
        backend.image_by_image(fn, in_axes=(None, 0, 0))(w, x, p[:2])


def test_backend_options_restore_and_refuse_unknown_attention():
    with backend.backend_options(cpu_rewrites=False, attention="xla"):
        assert (backend._cpu_rewrites, backend._attention) == (False, "xla")
    assert (backend._cpu_rewrites, backend._attention) == (True, "auto")
    with pytest.raises(ValueError, match="attention implementation"):
        with backend.backend_options(attention="flash"):
            pass


# -- bf16 compute: native on GPU/TPU, float32 with bf16 matmul operands on a CPU -------------

BF16_RTOL = 2e-2  # bf16 keeps 8 bits of mantissa: a relative rounding of 2^-9 per operand


@pytest.mark.parametrize("spec, x_shape, w_shape", [
    ("mk,kn->mn", (64, 48), (48, 32)),
    ("...i,io->...o", (2, 5, 7, 48), (48, 16)),           # nnx.Linear's matmul
    ("bhqd,bhkd->bhqk", (2, 3, 20, 16), (2, 3, 24, 16))])  # attention logits
def test_bf16_dot_is_the_float32_product_of_bf16_roundings(spec, x_shape, w_shape):
    """``backend.bf16_dot`` against NumPy in float64: its value and ``x``'s gradient are the
    products of the bf16-rounded operands (close to the float32 ones within bf16 rounding, and
    not equal to them), ``w``'s gradient is the float32 one."""
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape))
    y, vjp = jax.vjp(lambda x, w: backend.bf16_dot(spec, x, w), jnp.asarray(x), jnp.asarray(w))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = vjp(jnp.asarray(dy))
    # NumPy's spec: the ellipsis spelt out (NumPy does not sum an ellipsis away)
    spec = spec.replace("...", "XYZ"[:x.ndim - 1])
    (a, b), out = spec.split("->")[0].split(","), spec.split("->")[1]

    def bf16(v):
        return np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)
    f64 = np.float64
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32
    assert _rel(y, np.einsum(spec, bf16(x), bf16(w))) < RTOL
    assert _rel(dx, np.einsum(f"{out},{b}->{a}", bf16(dy), bf16(w))) < RTOL
    assert _rel(dw, np.einsum(f"{a},{out}->{b}", x.astype(f64), dy.astype(f64))) < RTOL
    exact_y = np.einsum(spec, x.astype(f64), w.astype(f64))
    exact_dx = np.einsum(f"{out},{b}->{a}", dy.astype(f64), w.astype(f64))
    for got, exact in ((y, exact_y), (dx, exact_dx)):
        assert 1e-4 < _rel(got, exact) < BF16_RTOL


def _tiny_bf16_model():
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    return cfg, random_model(cfg, seed=0)


@pytest.mark.slow
def test_bf16_training_loss_and_gradients_are_close_to_float32():
    """The bf16 training function of a tiny AutoMedSAM (encoder in bf16, class prompt encoder
    and decoder in bf16, float32 loss) in its CPU form and natively, against float32 at
    highest precision: loss and the trained gradients within bf16 rounding."""
    cfg, model = _tiny_bf16_model()
    graphdef, params, frozen = split_trainee(Trainee(model, LossWeights(LossConfig())))
    batch = _batch(cfg)

    def run(dtype):
        def f(params):
            trainee = nnx.merge(graphdef, params, frozen)
            return loss_and_terms(trainee, batch, jax.random.key(0), cached=False,
                                  encoder_dtype=dtype, compute_dtype=dtype)[0]
        return jax.jit(jax.value_and_grad(f))(params)

    with jax.default_matmul_precision("highest"):
        loss_ref, grads_ref = run(jnp.float32)
    ref = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads_ref)])
    for form in ("cpu", "native"):
        with backend.backend_options(cpu_rewrites=form == "cpu"):
            loss, grads = run(jnp.bfloat16)
        got = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
        assert abs(float(loss) - float(loss_ref)) < BF16_RTOL * abs(float(loss_ref)), form
        assert 1e-4 < _rel(got, ref) < 5 * BF16_RTOL, form


def test_only_a_cpu_lowering_computes_bf16_in_float32():
    """Lowered for CUDA or TPU, the bf16 encoder and decoder compute natively (bf16
    convolutions, every bf16 matmul with a bf16 result); lowered for the CPU, the convolutions
    are float32 and the matmuls take bf16 operands to a float32 result."""
    from automedsam_jax.core.automedsam import embed_images, with_dtype
    cfg, model = _tiny_bf16_model()
    graphdef, state = nnx.split(model)
    x = jnp.ones((2, cfg.sam.image_size, cfg.sam.image_size, 3), jnp.float32)

    def f(state, x):
        m = nnx.merge(graphdef, state)
        emb = embed_images(m, x, jnp.bfloat16)
        return with_dtype(m, jnp.bfloat16).decode(emb.astype(jnp.bfloat16),
                                                  jnp.array([1, 2])).low_res_logits

    def ops(text, name):  # the (operand, operand) -> result element types of each op
        return re.findall(rf"stablehlo\.{name}.*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)"
                          rf" -> tensor<[^>]*x(\w+)>", text)

    text = {p: jax.export.export(jax.jit(f), platforms=[p])(state, x).mlir_module()
            for p in ("cpu", "cuda", "tpu")}
    for p in ("cuda", "tpu"):
        assert set(ops(text[p], "convolution")) == {("bf16", "bf16", "bf16")}, p
        assert ("bf16", "bf16", "bf16") in ops(text[p], "dot_general"), p
        assert ("bf16", "bf16", "f32") not in ops(text[p], "dot_general"), p
    assert set(ops(text["cpu"], "convolution")) == {("f32", "f32", "f32")}
    assert ("bf16", "bf16", "f32") in ops(text["cpu"], "dot_general")
    assert ("bf16", "bf16", "bf16") not in ops(text["cpu"], "dot_general")
