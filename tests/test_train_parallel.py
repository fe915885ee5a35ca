"""The data-parallel step (docs/method.md#scale-and-resumption) on 8 (host-platform) devices
gives the parameters of the 1-device step. Run in a subprocess: the device count must be set before
jax is imported.

Plain SGD is used on purpose: Adam divides the gradient by its own RMS, so an N× too large
gradient (``pmean`` after a ``shard_map`` gradient that is already summed) would go unnoticed;
with SGD it makes the update N× too large. Tolerance: the 8-device run only reorders float32
sums (per-shard partial sums, then an all-reduce), a relative error of ~1e-6 per reduction; after
3 steps we require ‖Δ₈ − Δ₁‖ ≤ 1e-3·‖Δ₁‖ on the parameter updates Δ and equal losses to 1e-5
relative — three orders of magnitude below what a factor 8 (or 1/8) produces.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # minutes: not in the fast tier


SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np, optax
    jax.config.update("jax_default_matmul_precision", "highest")
    from flax import nnx
    from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, LossConfig, SamConfig
    from automedsam_jax.core.losses import LossWeights
    from automedsam_jax.train.optim import Trainee
    from automedsam_jax.core.init import random_model
    from automedsam_jax.train.step import data_mesh, init_state, make_train_step, shard_batch

    assert jax.device_count() == 8, jax.devices()
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    S, L, B = cfg.sam.image_size, cfg.sam.low_res_size, 8
    rs = np.random.RandomState(0)
    batches = []
    for _ in range(3):
        mask = np.zeros((B, L, L), np.float32)
        for i in range(B):
            y, x = rs.randint(0, L // 2, 2); mask[i, y:y + L // 3, x:x + L // 4] = 1
        batches.append({"image": rs.rand(B, S, S, 3).astype(np.float32),
                        "class_id": rs.randint(1, 4, B).astype(np.int32), "mask": mask,
                        "box": np.sort(rs.rand(B, 4).astype(np.float32) * S, -1),
                        "dist": rs.rand(B, L, L).astype(np.float32) * 0.1})
    tx = optax.sgd(0.01)
    out = {}
    for n in (1, 8):
        mesh = data_mesh(jax.devices()[:n])
        trainee = Trainee(random_model(cfg, 0), LossWeights(LossConfig()))
        state, frozen, graphdef = init_state(trainee, tx, mesh)
        p0 = jax.tree.map(np.asarray, nnx.to_pure_dict(state["params"]))
        step = make_train_step(graphdef, tx, mesh)
        for i, b in enumerate(batches):
            state, m = step(state, frozen, shard_batch(b, mesh), jax.random.key(7))
            out[f"loss{n}_{i}"] = np.asarray(m["loss"])
        p = nnx.to_pure_dict(state["params"])
        for path, leaf in jax.tree_util.tree_leaves_with_path(p):
            name = jax.tree_util.keystr(path)
            out[f"delta{n}{name}"] = np.asarray(leaf) - np.asarray(
                jax.tree_util.tree_leaves_with_path(p0)[[jax.tree_util.keystr(q) for q, _ in
                    jax.tree_util.tree_leaves_with_path(p0)].index(name)][1])
    np.savez(sys.argv[1], **out)
""")


def test_eight_devices_match_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = tmp_path / "out.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env,
                   cwd=Path(__file__).parents[1], timeout=300)
    r = np.load(out)
    for i in range(3):
        np.testing.assert_allclose(r[f"loss8_{i}"], r[f"loss1_{i}"], rtol=1e-5)
    names = [k[len("delta1"):] for k in r.files if k.startswith("delta1")]
    assert len(names) > 20
    d1 = np.concatenate([r["delta1" + n].ravel() for n in names])
    d8 = np.concatenate([r["delta8" + n].ravel() for n in names])
    assert np.linalg.norm(d1) > 1e-3  # the parameters really moved
    assert np.linalg.norm(d8 - d1) <= 1e-3 * np.linalg.norm(d1), (
        np.linalg.norm(d8) / np.linalg.norm(d1))
    for n in names:  # every trained tensor, not just the bulk
        np.testing.assert_allclose(r["delta8" + n], r["delta1" + n], atol=1e-5 + 1e-3 * np.abs(
            r["delta1" + n]).max(), err_msg=n)
