"""``gs://`` work directories end to end, against a real local GCS (``tests/gcs_emulator.py``:
gcp-storage-emulator on 127.0.0.1, started here): the work-directory lock as a create-if-absent
object, and a tiny ``train.py`` on ``--workdir gs://... --data-dir gs://...`` killed with
SIGKILL, restarted (as another host: the dataset downloaded, not built) to the parameters of an
uninterrupted *local* run, then ``evaluate.py`` (metrics written to gs://) and ``predict``
reading the model from gs:// with the results of the local model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_build import write_ct_cases
from test_train_resume import ROOT, _cmd, _final_params

from gcs_emulator import environment

BUCKET = "bkt"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """The emulator's environment, set in this process too (gcsfs reads it when it connects)."""
    pytest.importorskip("gcp_storage_emulator")
    port = _free_port()
    emulator = subprocess.Popen([sys.executable, str(Path(__file__).with_name("gcs_emulator.py")),
                                 str(port), BUCKET], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        assert json.loads(emulator.stdout.readline())["port"] == port, "no emulator"
        env = environment(port)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():  # before gcsfs is imported: it reads some then
                mp.setenv(key, value)
            gcsfs = pytest.importorskip("gcsfs")
            gcsfs.GCSFileSystem.clear_instance_cache()
            yield env
        gcsfs.GCSFileSystem.clear_instance_cache()
    finally:
        emulator.kill()
        emulator.wait()


def _path(url):
    from automedsam_jax.io.paths import as_path
    return as_path(url)


def test_the_lock_is_a_create_if_absent_object(gcs):
    from automedsam_jax.io.errors import UsageError
    from automedsam_jax.io.rundir import LOCK_FILE, WorkdirLock

    work = _path(f"gs://{BUCKET}/locks/a")
    lock = WorkdirLock.acquire(work)
    host = socket.gethostname()
    assert (work / LOCK_FILE).read_text() == f"{host} {os.getpid()}\n"
    with pytest.raises(UsageError, match=f"in use by another train.py \\(host {host}, pid "
                                         f"{os.getpid()}\\)"):
        WorkdirLock.acquire(work)  # this process is alive: refused
    lock.release()
    assert not (work / LOCK_FILE).exists()
    WorkdirLock.acquire(work).release()  # free again

    # A killed run's lock on this host (its pid is gone) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (work / LOCK_FILE).write_text(f"{host} {dead.pid}\n")
    lock = WorkdirLock.acquire(work)
    assert (work / LOCK_FILE).read_text() == f"{host} {os.getpid()}\n"
    lock.release()

    # Another host's lock cannot be judged from here: refused, naming how to clear it.
    (work / LOCK_FILE).write_text("another-host 1\n")
    with pytest.raises(UsageError, match=f"host another-host, pid 1.*gcloud storage rm "
                                         f"gs://{BUCKET}/locks/a/{LOCK_FILE}"):
        WorkdirLock.acquire(work)
    assert (work / LOCK_FILE).read_text() == "another-host 1\n"  # left as it was


def test_of_two_exclusive_creates_one_wins(gcs):
    """The precondition the lock relies on: the second create of one object fails."""
    from automedsam_jax.io.paths import create_new
    path = _path(f"gs://{BUCKET}/locks/b/.lock")
    create_new(path, "first\n")
    with pytest.raises(FileExistsError):
        create_new(path, "second\n")
    assert path.read_text() == "first\n"


def _latest(work) -> int:
    import fsspec
    fsspec.filesystem("gs").invalidate_cache()  # listings are cached: see the other process's
    folder = work / "checkpoints"
    if not folder.exists():
        return 0
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0)


def test_train_kill_resume_evaluate_predict_on_gs(gcs, reference, tmp_path):
    """``reference``: the same command run uninterrupted on local work and data directories.
    Here both are on gs://; the restart plays another host (its own, empty, local cache:
    the dataset is downloaded from gs:// rather than built)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **gcs)
    hosts = {h: dict(env, AUTOMEDSAM_CACHE=str(tmp_path / h)) for h in ("first", "second")}
    local = reference / "run"
    url, data = f"gs://{BUCKET}/run", f"gs://{BUCKET}/data"

    proc = subprocess.Popen(_cmd(url, data), env=dict(hosts["first"], PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []  # killed once epoch 1 of 3 is logged (its 4 steps checkpointed, or being so)
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 1/3"):
            break
    else:
        raise AssertionError("".join(seen)[-3000:])
    proc.kill()
    proc.wait()
    assert f"dataset uploaded to {data}" in "".join(seen)  # built on the first host's disk
    work = _path(url)
    killed_at = _latest(work)
    assert 0 < killed_at < 12, f"killed at step {killed_at}: before the first or after the last"
    assert (work / ".lock").exists()  # left by the killed run; its pid is gone: taken over
    out = subprocess.run(_cmd(url, data, "--compilation-cache", f"gs://{BUCKET}/xla"),
                         env=hosts["second"], timeout=300, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming at step {killed_at}" in out.stdout + out.stderr
    assert "dataset uploaded" not in out.stdout  # downloaded, not built again
    mirror = tmp_path / "second" / "staged" / "gs" / BUCKET / "data"
    built = sorted(p.relative_to(reference / "data").as_posix()
                   for p in (reference / "data").rglob("*.array_record*"))
    assert built and built == sorted(p.relative_to(mirror).as_posix()
                                     for p in mirror.rglob("*.array_record*"))
    assert not (work / ".lock").exists()  # released at the end
    want, got = _final_params(local), _final_params(work)
    assert want.keys() == got.keys()
    for p in want:  # same program, same inputs, same order: bitwise equal
        np.testing.assert_array_equal(got[p], want[p], err_msg=str(p))
    for name in ("train_config.json", "summary.json"):
        assert json.loads((work / name).read_text())
    assert list((work / "tb").glob("events.out.tfevents.*"))

    # evaluate.py: the model read from gs://, the metrics written there; those of the local run.
    def evaluate(checkpoint, out_dir):
        run = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--checkpoint",
                              str(checkpoint), "--out", str(out_dir)],
                             env=hosts["second"], timeout=300, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    evaluate(url, f"{url}/eval")
    evaluate(local, tmp_path / "eval")  # its dataset: the local one it was trained on
    from_gs = json.loads(_path(f"{url}/eval/metrics.json").read_text())
    from_local = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert from_gs["per_dataset"] and from_gs["per_dataset"] == from_local["per_dataset"]

    # predict: the model read from gs://, the label map that of the local model.
    cases = write_ct_cases(tmp_path, 1)
    name, (imgs, _) = next(iter(cases.items()))
    for checkpoint, seg in ((url, "gs.npz"), (local, "local.npz")):
        run = subprocess.run([sys.executable, "-m", "automedsam_jax.predict",
                              str(tmp_path / f"{name}.npz"), "--checkpoint", str(checkpoint),
                              "--out", str(tmp_path / seg)],
                             env=hosts["second"], timeout=300, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
    with np.load(tmp_path / "gs.npz") as a, np.load(tmp_path / "local.npz") as b:
        assert a["segs"].shape == imgs.shape
        np.testing.assert_array_equal(a["segs"], b["segs"])


def test_weights_from_gs(gcs):
    """``--weights gs://…``: a converted backbone saved to the bucket gives the AutoMedSAM its
    image encoder, prompt encoder and decoder unchanged."""
    from flax import nnx

    from automedsam_jax.core.config import TINY_CLASS_PROMPT, SamConfig
    from automedsam_jax.core.init import random_model
    from automedsam_jax.io.checkpoint import pretrained_automedsam, save_model
    sam = random_model(SamConfig.preset("tiny_vit_b"), seed=3)
    save_model(sam, f"gs://{BUCKET}/weights/tiny_vit_b")
    model = pretrained_automedsam(f"gs://{BUCKET}/weights/tiny_vit_b", TINY_CLASS_PROMPT)
    want = nnx.to_flat_state(nnx.state(sam))
    got = dict(nnx.to_flat_state(nnx.state(model)))
    assert len(want) > 50
    for path, value in want:
        np.testing.assert_array_equal(np.asarray(got[path].get_value()),
                                      np.asarray(value.get_value()), err_msg=str(path))
