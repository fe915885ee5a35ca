"""Checkpoints (docs/method.md#scale-and-resumption): a real ``train.py`` process killed with
SIGKILL mid-run and restarted ends with the parameters of an uninterrupted run; SIGTERM checkpoints
before exiting; a non-finite loss stops the run naming the step and leaves the last checkpoint
intact; the
uninterrupted run logs every scalar, and its validation scores are those of its exported model."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
DATASET = "synthetic:num_cases=10,num_classes=3,height=48,width=48"


def _cmd(workdir, data_dir, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--dataset", DATASET, "--backbone",
            "tiny_vit_b", "--weights", "random", "--class-prompt-widths", "8", "16", "32",
            "--workdir", str(workdir), "--data-dir", str(data_dir), "--epochs", "3",
            "--batch-size", "2", "--checkpoint-every", "1", "--keep-checkpoints", "2",
            "--prompt", "class", "--no-progress", *extra]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))


def _final_params(workdir):
    from flax import nnx
    from automedsam_jax.io.checkpoint import load_model
    model = load_model(workdir / "final")
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(model))}


def _latest(workdir):
    steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    return max(steps) if steps else None


def _wait_for_checkpoint(proc, workdir, at_least, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (workdir / "checkpoints").exists() and (_latest(workdir) or 0) >= at_least:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise TimeoutError


def run_reference(root: Path) -> Path:
    """:func:`_cmd` run uninterrupted on ``root/run`` with its dataset in ``root/data`` (the
    ``reference`` fixture of conftest, shared with test_cloud_paths)."""
    subprocess.run(_cmd(root / "run", root / "data"), check=True, env=_env(), timeout=300,
                   capture_output=True)
    return root


@pytest.mark.slow
def test_sigkill_then_restart_matches_uninterrupted(reference, tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen(_cmd(work, reference / "data"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_checkpoint(proc, work, 4)  # mid epoch 2 of 3 (4 steps/epoch)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _latest(work)
    assert killed_at < 12, "the run finished before it could be killed"
    out = subprocess.run(_cmd(work, reference / "data"), env=_env(), timeout=300,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming at step {killed_at}" in out.stdout + out.stderr
    ref, got = _final_params(reference / "run"), _final_params(work)
    assert ref.keys() == got.keys()
    for p in ref:  # same program, same inputs, same order: bitwise equal
        np.testing.assert_array_equal(got[p], ref[p], err_msg=str(p))
    # TensorBoard events were written by the run (loss terms, σ, lr, img/s, validation).
    assert list((work / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sigkill_with_the_embedding_cache_resumes_exactly(reference, tmp_path):
    """From cached embeddings: the run killed mid-training restarts on the cache its first
    attempt stored (reused, nothing embedded again) and ends with the parameters of an
    uninterrupted cached run that built its own cache."""
    def cmd(run, cache):
        return _cmd(tmp_path / run, reference / "data", "--cache-embeddings", "--cache-dir",
                    str(tmp_path / cache))

    ref = subprocess.run(cmd("ref", "cache_ref"), env=_env(), timeout=300, capture_output=True,
                         text=True)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    proc = subprocess.Popen(cmd("run", "cache"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    _wait_for_checkpoint(proc, tmp_path / "run", 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _latest(tmp_path / "run") < 12, "the run finished before it could be killed"
    out = subprocess.run(cmd("run", "cache"), env=_env(), timeout=300, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embeddings reused from" in out.stdout and "resuming at step" in out.stdout
    want, got = _final_params(tmp_path / "ref"), _final_params(tmp_path / "run")
    for p in want:
        np.testing.assert_array_equal(got[p], want[p], err_msg=str(p))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint(reference, tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen(_cmd(work, reference / "data", "--checkpoint-every", "100"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoint(proc, work, 4)  # the end-of-epoch-1 checkpoint
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "SIGTERM: checkpoint saved at step" in out
    step = int(out.split("SIGTERM: checkpoint saved at step ")[1].split(";")[0])
    assert _latest(work) == step


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_checkpoint(reference, tmp_path):
    work = tmp_path / "run"
    # lr 1e30: the first update blows the parameters up, the second step's loss is not finite.
    out = subprocess.run(_cmd(work, reference / "data", "--lr", "1e30"), env=_env(),
                         timeout=300, capture_output=True, text=True)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "non-finite loss at step" in out.stderr
    bad = int(out.stderr.split("non-finite loss at step ")[1].split(" ")[0])
    assert _latest(work) == bad - 1
    assert not (work / "final").exists()


@pytest.mark.slow
def test_tensorboard_events_hold_every_scalar(reference):
    """The uninterrupted run's event file, read by TensorBoard's own reader (no TensorFlow):
    one value per step for each loss term, σ, lr and img/s; per-epoch loss = mean of its steps;
    the final validation (step 12) per class, and the mean over classes, as summary.json reports
    them; and those scores recomputed from the exported ``final/`` model by an independent route
    (``validation_reference``: one class at a time, NumPy frames, NumPy Dice)."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from automedsam_jax.data import prepare
    from validation_reference import assert_validation_scores
    acc = EventAccumulator(str(reference / "run" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    per_step = ["train/loss", "train/loss/mse", "train/loss/ce", "train/loss/dice", "train/loss/sd",
                "train/sigma/0", "train/sigma/3", "train/lr", "train/grad_norm"]
    for tag in per_step:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, 13)), tag
    # Throughput leaves out step 1, which compiles the step function.
    assert [e.step for e in acc.Scalars("train/img_per_s")] == list(range(2, 13))
    loss = np.array([e.value for e in acc.Scalars("train/loss")])
    epoch = np.array([e.value for e in acc.Scalars("train/epoch_loss")])
    np.testing.assert_allclose(epoch, loss.reshape(3, 4).mean(axis=1), rtol=1e-5)
    assert {"validation/dsc", "validation/nsd", "validation/dsc/structure_1"} <= tags, tags

    final = acc.Scalars("validation/dsc")[-1]
    assert final.step == 12  # validation of the final model, after the last step
    logged = {tag.rsplit("/", 1)[1]: acc.Scalars(tag)[-1] for tag in tags
              if tag.startswith("validation/dsc/")}
    logged = {name: e.value for name, e in logged.items() if e.step == final.step}
    summary = json.loads((reference / "run" / "summary.json").read_text())["validation"]
    per_class = summary["per_class"]
    assert set(logged) == set(per_class)
    for name, value in logged.items():  # TensorBoard stores float32
        assert value == pytest.approx(per_class[name]["dsc"], abs=1e-6), name
    assert final.value == pytest.approx(summary["mean_dsc"], abs=1e-6)
    assert summary["mean_dsc"] == pytest.approx(np.mean([s["dsc"] for s in per_class.values()]),
                                                abs=1e-12)
    assert summary["mean_nsd"] == pytest.approx(np.mean([s["nsd"] for s in per_class.values()]),
                                                abs=1e-12)
    assert_validation_scores(per_class, reference / "run" / "final",
                             prepare(DATASET, reference / "data"))
