"""The user's command on a dataset preset: ``python train.py --dataset abdomenct1k`` trains from
challenge-format ``.npz`` files on disk (a tiny backbone and a few synthetic volumes), exports the
final model and reports per-class validation DSC/NSD under the preset's class names: those of the
exported model, recomputed by an independent route (``validation_reference``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_build import write_ct_cases
from validation_reference import assert_validation_scores

from automedsam_jax.core.automedsam import AutoMedSAM
from automedsam_jax.data import prepare
from automedsam_jax.io.checkpoint import load_model, read_meta

pytestmark = pytest.mark.slow  # minutes: not in the fast tier


ROOT = Path(__file__).resolve().parents[1]


def test_train_py_on_challenge_npz_files(tmp_path):
    manual = tmp_path / "npz"
    manual.mkdir()
    write_ct_cases(manual, 10)                      # 8 / 1 / 1 cases of 5 slices
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", "abdomenct1k",
           "--manual-dir", str(manual), "--data-dir", str(tmp_path / "data"),
           "--workdir", str(workdir), "--backbone", "tiny_vit_b", "--weights", "random",
           "--class-prompt-widths", "8", "16", "32", "--epochs", "1", "--batch-size", "4",
           "--prompt", "class",  # the route validation_reference recomputes
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 8 training cases of 5 slices; slices without any organ are not training samples.
    found = re.search(r"abdomenct1k: (\d+) training slices, (\d+) steps/epoch", proc.stdout)
    assert found, proc.stdout[-3000:]
    slices, steps = map(int, found.groups())
    assert 8 <= slices <= 40 and steps == slices // 4
    assert "validation at step" in proc.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == steps
    per_class = summary["validation"]["per_class"]
    assert per_class and set(per_class) <= {"liver", "kidney", "spleen", "pancreas"}
    for key in ("dsc", "nsd"):
        assert summary["validation"][f"mean_{key}"] == pytest.approx(
            sum(s[key] for s in per_class.values()) / len(per_class), abs=1e-12)
    # the validation case (the one of the 10 that the 8/1/1 split gives), from the export
    builder = prepare("abdomenct1k", tmp_path / "data", manual_dir=manual)
    assert_validation_scores(per_class, workdir / "final", builder)
    assert isinstance(load_model(workdir / "final"), AutoMedSAM)
    meta = read_meta(workdir / "final")
    assert meta["class_names"] == ["liver", "kidney", "spleen", "pancreas"]
    assert meta["step"] == steps
