"""Multi-host training on one machine: two ``train.py`` processes joined by
``jax.distributed.initialize`` (``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/
``JAX_PROCESS_ID``; CPU collectives over gloo), one CPU device each, end with the parameters of
one process driving two devices.

Each process reads its own half of every global batch (grain ``ShardByJaxProcess``: element i of
the epoch goes to process i mod 2), which is the sample the second device gets in the one-process
run; each device computes its one-sample share the same way and the all-reduce adds the same two
partial gradients (float addition of two operands is commutative), so the parameters are
bitwise equal. Only process 0 writes the exported model, logs and TensorBoard events.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # minutes: not in the fast tier


ROOT = Path(__file__).parents[1]
DATASET = "synthetic:num_cases=6,num_classes=3,height=48,width=48"


def _cmd(workdir, data_dir):
    return [sys.executable, str(ROOT / "train.py"), "--dataset", DATASET, "--backbone",
            "tiny_vit_b", "--weights", "random", "--class-prompt-widths", "8", "16", "32",
            "--workdir", str(workdir), "--data-dir", str(data_dir), "--epochs", "2",
            "--batch-size", "2", "--lr", "1e-3", "--no-progress"]


def _params(workdir):
    from flax import nnx
    from automedsam_jax.io.checkpoint import load_model
    model = load_model(workdir / "final")
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("cached", [False, True], ids=["online", "cached"])
def test_two_processes_match_one_process_two_devices(tmp_path, cached):
    """Online, and from the embedding cache: each process embeds its half of the slices into its
    own shard (slice i to process i mod 2), both read both shards."""
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    data = tmp_path / "data"

    def cmd(run):
        extra = ["--cache-embeddings", "--cache-dir", str(tmp_path / f"cache_{run}")]
        return _cmd(tmp_path / run, data) + (extra if cached else [])

    single = subprocess.run(
        cmd("one"), capture_output=True, text=True, timeout=600,
        env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert single.returncode == 0, single.stdout + single.stderr
    port = _free_port()
    procs = [subprocess.Popen(
        cmd("two"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(base, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(i), XLA_FLAGS="--xla_force_host_platform_device_count=1"))
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    assert "on 2 device(s)" in outs[0] and "training done: 4 steps" in outs[0], outs[0]
    assert "training done" not in outs[1]  # only process 0 logs
    if cached:
        shards = sorted(p.name for p in (tmp_path / "cache_two").glob("*/shard-*.array_record"))
        assert shards == ["shard-00000-of-00002.array_record",
                          "shard-00001-of-00002.array_record"]
    assert len(list((tmp_path / "two" / "tb").iterdir())) == 1  # one event file: process 0's
    ref, got = _params(tmp_path / "one"), _params(tmp_path / "two")
    init = _initial_params()
    assert ref.keys() == got.keys()
    trained = [n for n in ref if "localiser" in str(n)]  # the default recipe's head
    update = np.concatenate([(ref[n] - init[n]).ravel() for n in trained])
    assert np.linalg.norm(update) > 1e-2  # the runs really trained
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=str(name))


def _initial_params():
    from flax import nnx
    from automedsam_jax.train.config import from_args
    from automedsam_jax.train.loop import build_model
    model = build_model(from_args(_cmd("w", "d")[2:]), num_classes=3)
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}
