"""The benchmarks at a tiny size: the accelerator run's dry run (``benchmarks/accelerator.py
--dry-run``: ``frameworks.py``, ``classes_step.py``, ``eval_speed.py``), the PyTorch loss of
``frameworks.py`` (``automedsam_references.torch_training``) against ``automedsam_jax.core.losses``,
the mixed-precision step it times, and the FLOP counts.
The PyTorch side needs the ``[torch]`` extra (``requires_torch``); the JAX side runs without it."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automedsam_jax.core import backend
from automedsam_jax.core.automedsam import AutoMedSamOutput
from flax import nnx

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, ClassPromptConfig,
                                        LossConfig, SamConfig, ViTConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights, joint_loss
from automedsam_jax.core.modeling.class_prompt_encoder import ClassPromptEncoder
from automedsam_jax.train import step as st
from automedsam_jax.train.optim import Trainee, adamw

from conftest import load_benchmark

# conv_layers and frameworks import PyTorch only when they run it; torch_training imports it at
# once; accelerator imports nothing but the standard library until it runs.
accelerator = load_benchmark("accelerator")
conv_layers = load_benchmark("conv_layers")
frameworks = load_benchmark("frameworks")

CFG = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)


def test_vit_b_analytic_flops():
    """SAM ViT-B at 1024²: about 0.97 TFLOP (the issue's figure)."""
    assert frameworks.vit_encoder_flops(ViTConfig()) == pytest.approx(0.972e12, rel=0.005)


@pytest.mark.requires_torch
@pytest.mark.parametrize("weighting", ["uncertainty", "fixed"])
def test_torch_joint_loss_matches_jax(weighting):
    import torch

    from automedsam_references import torch_training
    rs = np.random.RandomState(0)
    B, g, C = 2, 4, 8
    inputs = frameworks.make_inputs(CFG, B)  # masks and distance maps at the tiny frame
    mask, dist = inputs["mask"], inputs["dist"]
    low = 3 * rs.randn(*mask.shape).astype(np.float32)
    sparse, ts = rs.randn(2, B, 2, C).astype(np.float32)
    dense, td = rs.randn(2, B, g, g, C).astype(np.float32)
    sigma = np.array([1.0, 0.5, 2.0, 1.5], np.float32)
    cfg = LossConfig(weighting=weighting)
    weights = LossWeights(cfg)
    if weighting == "uncertainty":
        weights.sigma.set_value(jnp.asarray(sigma))
    ref, ref_terms = joint_loss(AutoMedSamOutput(low, None, sparse, dense),
                                {"mask": mask, "dist": dist}, (ts, td), weights)
    t = torch.from_numpy
    nchw = lambda x: t(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
    got, terms = torch_training.joint_loss(t(low), t(sparse), nchw(dense),
                                           {"mask": t(mask), "dist": t(dist)}, (t(ts), nchw(td)),
                                           t(sigma), cfg)
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    for k in ref_terms:
        assert float(terms[k]) == pytest.approx(float(ref_terms[k]), rel=1e-6), k


def _count_dots(jaxpr, counter):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            counter[tuple(str(v.aval.dtype) for v in eqn.invars[:2])] += 1
        for p in eqn.params.values():
            sub = getattr(p, "jaxpr", None)
            if sub is not None:
                _count_dots(getattr(sub, "jaxpr", sub), counter)
    return counter


def _step_inputs(seed=0):
    trainee = Trainee(random_model(CFG, seed), LossWeights(LossConfig()))
    tx, mesh = adamw(), st.data_mesh()
    state, frozen, graphdef = st.init_state(trainee, tx, mesh)
    batch = {k: v for k, v in frameworks.make_inputs(CFG, 2).items()}
    return graphdef, tx, mesh, state, frozen, batch


@pytest.mark.slow
def test_bf16_step_computes_in_bf16_with_f32_params_and_loss():
    """Natively (the GPU/TPU form, ``cpu_rewrites=False``) every matmul and convolution of the
    bf16 step is bf16×bf16 but the teacher's box encoding; parameters, optimizer state and loss
    stay float32, and the loss (the CPU form on this CPU) is close to the float32 one (same
    noise, passed in the batch)."""
    graphdef, tx, mesh, state, frozen, batch = _step_inputs()
    key = jax.random.key(0)
    with backend.backend_options(cpu_rewrites=False):
        jaxpr = jax.make_jaxpr(lambda s, f, b, k: st._step(graphdef, tx, False, jnp.bfloat16,
                                                           jnp.bfloat16, False, s, f, b, k))(
            state, frozen, batch, key)
    dots = _count_dots(jaxpr.jaxpr, collections.Counter())
    assert dots[("bfloat16", "bfloat16")] > 100
    assert set(dots) == {("bfloat16", "bfloat16"), ("float32", "float32")}
    assert dots[("float32", "float32")] == 1  # the teacher's box positional encoding
    shard = st.shard_batch(batch, mesh)
    losses = {}
    for dt in (jnp.float32, jnp.bfloat16):
        step = st.make_train_step(graphdef, tx, mesh, encoder_dtype=dt, compute_dtype=dt)
        new, metrics = step(jax.tree.map(jnp.copy, state), frozen, shard, key)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["params"]))
        assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(new["opt"]))
        assert metrics["loss"].dtype == jnp.float32
        losses[dt] = float(metrics["loss"])
    assert losses[jnp.bfloat16] == pytest.approx(losses[jnp.float32], rel=2e-2)


@pytest.mark.slow
def test_explicit_noise_in_the_batch_replaces_the_key():
    graphdef, tx, mesh, state, frozen, batch = _step_inputs()
    loss = st.make_loss_fn(graphdef, mesh)
    a = float(loss(state, frozen, st.shard_batch(batch, mesh), jax.random.key(0))[0])
    b = float(loss(state, frozen, st.shard_batch(batch, mesh), jax.random.key(1))[0])
    assert a == b  # the batch's noise is used, not the key's
    del batch["noise"]
    c = float(loss(state, frozen, st.shard_batch(batch, mesh), jax.random.key(0))[0])
    assert c != a


def _table_lines(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``, each as its lines."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.mark.slow
@pytest.mark.requires_torch
def test_accelerator_dry_run(tmp_path):
    """``benchmarks/accelerator.py --dry-run`` (its own process: it sets JAX's environment
    before JAX starts) runs every part on the CPU at tiny size and writes every file: the
    environment, each part's table and JSON with every planned row and round, the summary.
    JAX and PyTorch, fed the same weights, inputs and noise, reach the same loss after N calls in
    float32; the one-class and all-classes steps, fed the same pairs, the same loss."""
    script = Path(accelerator.__file__)
    out = tmp_path / "acc"
    subprocess.run([sys.executable, str(script), str(out), "--dry-run"], check=True,
                   capture_output=True, text=True, timeout=900)
    files = {p.name for p in out.iterdir()}
    parts = [p[0] for p in accelerator.PARTS]
    assert files == {"env.json", "env.md", "summary.md"} | {
        f"{p}.{ext}" for p in parts for ext in ("md", "json")}
    env = json.loads((out / "env.json").read_text())
    assert env["dry_run"] and env["jax_devices"] and {"jax", "jaxlib", "torch"} <= set(
        env["packages"])
    summary = (out / "summary.md").read_text()
    for part, _, module, _, dry in accelerator.PARTS:
        result = json.loads((out / f"{part}.json").read_text())
        md = (out / f"{part}.md").read_text()
        assert f"python benchmarks/{module}.py" in md
        for table in _table_lines(md):  # one column count per table
            assert len({line.count("|") for line in table}) == 1, table
        if module == "frameworks":
            modes = dry[dry.index("--modes") + 1:dry.index("--rows")]
            names = dry[dry.index("--rows") + 1:]
            rows = {(r["mode"], r["row"]): r for r in result["rows"]}
            assert set(rows) == {(m, n) for m in modes for n in names}
            for r in rows.values():
                assert not r["error"] and len(r["times_s"]) == 1 and r["gflop_per_image"] > 0
                assert r["loss_steps"] == 1 + frameworks.WARMUP + 1
            for mode in modes:
                j, t = rows[(mode, "jax-fp32")], rows[(mode, "torch-eager-fp32")]
                assert j["loss"] == pytest.approx(t["loss"], rel=1e-5), (part, mode)
                assert f"| {mode} | jax-fp32 |" in summary
            assert {(q["mode"], q["row"], q["vs"], q["best"]) for q in result["ratios"]} == {
                (m, "jax-fp32", "torch-eager-fp32", True) for m in modes}
            assert all(len(q["per_round"]) == 1 for q in result["ratios"])
            assert len(_table_lines(md)) == len(modes) + 1  # a table per mode, the ratios
        elif module == "classes_step":
            rows = {(r["mode"], r["row"]): r for r in result["rows"]}
            assert set(rows) == {("train", "one-class"), ("train", "all-classes")}
            one, every = rows[("train", "one-class")], rows[("train", "all-classes")]
            assert one["loss"] == pytest.approx(every["loss"], rel=1e-5)
            assert len(result["all_over_one"]["train"]) == 1 and "All classes" in summary
        else:
            assert [r["preset"] for r in result["rows"]] == ["tiny_vit_b"]
            assert result["rows"][0]["rate"] > 0 and "Evaluation: tiny_vit_b" in summary


@pytest.mark.slow
@pytest.mark.requires_torch
def test_accelerator_refuses_without_a_gpu(tmp_path):
    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is present")
    out = tmp_path / "acc"
    run = subprocess.run([sys.executable, accelerator.__file__, str(out)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0 and "no GPU" in run.stderr and not out.exists()


@pytest.mark.slow
@pytest.mark.requires_torch
def test_conv_layers_benchmark_times_the_encoders_own_convolutions(capsys):
    """``benchmarks/conv_layers.py`` lists exactly the 3×3 convolutions of the class prompt
    encoder (read off the module) and prints one table row per shape."""
    cfg = ClassPromptConfig()
    enc = nnx.eval_shape(lambda: ClassPromptEncoder(cfg, 256, 64, rngs=nnx.Rngs(0)))
    convs = collections.Counter(
        (m.in_features, m.out_features) for _, m in nnx.iter_graph(enc)
        if isinstance(m, nnx.Conv) and tuple(m.kernel_size) == (3, 3))
    listed = collections.Counter()
    for c_in, c_out, count in conv_layers.layer_shapes(*cfg.widths):
        listed[(c_in, c_out)] += count
    assert listed == convs
    conv_layers.main(["--size", "8", "--widths", "4,8,16", "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(conv_layers.layer_shapes(4, 8, 16)) + 1   # header, layers, all


@pytest.mark.slow
@pytest.mark.requires_torch
def test_profile_breakdown_finds_every_op_class(tmp_path):
    """``benchmarks/profile_breakdown.py`` (its own process: the XLA flag that makes XLA:CPU
    trace each instruction must precede JAX's start) at the tiny size: the step from cached
    embeddings has convolutions forward and both gradients, matmuls, attention and the
    optimizer on the JAX side, found in the trace, and the same classes on the PyTorch side."""
    out = tmp_path / "profile.json"
    subprocess.run([sys.executable, str(Path(frameworks.__file__).with_name("profile_breakdown.py")),
                    "--backbone", "tiny_vit_b", "--modes", "cached", "--calls", "1",
                    "--out", str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())["modes"]["cached"]
    jx, pt = result["jax"]["classes"], result["torch"]["classes"]
    for c in ("conv forward", "conv backward-input", "conv backward-filter", "matmul",
              "attention", "optimizer update", "element-wise & reductions"):
        assert jx.get(c, 0) > 0, (c, jx)
    for c in ("conv forward", "conv backward (both)", "matmul", "attention", "optimizer update"):
        assert pt.get(c, 0) > 0, (c, pt)
    assert result["jax"]["slowest"]
