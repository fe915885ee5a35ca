"""A dataset the user defines — a folder of challenge-format ``.npz`` files, class names with their
label values — goes through ``train.py`` → ``evaluate.py`` → ``predict`` with no code edits, on
real files on disk; the JSON-file form defines the same dataset as the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data_build import write_ct_cases

from automedsam_jax.data import prepare
from automedsam_jax.data.builder import dataset_spec
from automedsam_jax.data.custom import dataset_argument, dataset_config, parse_dataset_json
from automedsam_jax.evaluation.cli import main as evaluate_main
from automedsam_jax.io.errors import BadInputError, UsageError
from automedsam_jax.io.rundir import load_automedsam
from automedsam_jax.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
CLASSES = "liver=1,kidney=2,spleen=3+4"          # raw labels 3 and 4 are one class
NAMES = ["liver", "kidney", "spleen"]


def _write_cases(folder: Path, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``n`` 3D CT-like files under names no preset matches."""
    folder.mkdir(parents=True, exist_ok=True)
    written = write_ct_cases(folder, n)
    for i, name in enumerate(written):
        (folder / f"{name}.npz").rename(folder / f"scan_{i:04d}.npz")
    return {f"scan_{i:04d}": arrays for i, arrays in enumerate(written.values())}


@pytest.mark.slow
def test_train_evaluate_predict_on_a_user_dataset(tmp_path):
    cases = _write_cases(tmp_path / "my_scans", 10)
    work, data = tmp_path / "run", tmp_path / "data"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--dataset", "abdomen_mine", "--files",
         str(tmp_path / "my_scans"), "--classes", CLASSES, "--data-dir", str(data),
         "--workdir", str(work), "--backbone", "tiny_vit_b", "--weights", "random",
         "--class-prompt-widths", "8", "16", "32", "--epochs", "1", "--batch-size", "4",
         "--no-progress"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "abdomen_mine" in proc.stdout
    recorded = json.loads((work / "train_config.json").read_text())["data"]["dataset"]
    fields = json.loads(recorded)
    assert fields == {"name": "abdomen_mine", "files": str(tmp_path / "my_scans" / "*.npz"),
                      "classes": {"liver": [1], "kidney": [2], "spleen": [3, 4]},
                      "modality": "other", "ndim": 3, "other_labels": "error",
                      "split_fractions": [0.8, 0.1, 0.1]}
    assert list(fields["classes"]) == NAMES  # class-id order
    assert load_automedsam(work).class_names == tuple(NAMES)

    # The stored labels are the files' raw labels mapped by the classes (NumPy, independently).
    builder = prepare(recorded, data)
    assert builder.info.metadata["class_names"] == NAMES
    lut = np.array([0, 1, 2, 3, 3] + [0] * 251, np.uint8)
    checked = 0
    for split in ("train", "validation", "test"):
        src = builder.as_data_source(split)
        for i in range(len(src)):
            r = src[i]
            imgs, gts = cases[r["case_id"].decode()]
            z = int(r["slice_index"])
            np.testing.assert_array_equal(r["image"][..., 0], imgs[z])
            np.testing.assert_array_equal(r["label"], lut[gts[z]])
            checked += 1
    assert checked >= 10 * 5 * 0.2  # validation and test hold every slice of their cases

    # evaluate.py takes the dataset from the model; its table names the user's classes.
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(work), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["class_names"].values()) == NAMES
    assert list(metrics["per_dataset"]) == [builder.dataset.name]

    # predict on one of the user's files: the label map in the input's shape, classes named.
    name, (imgs, _) = next(iter(cases.items()))
    seg = tmp_path / "seg.npz"
    assert predict_main([str(tmp_path / "my_scans" / f"{name}.npz"), "--checkpoint", str(work),
                         "--out", str(seg)]) == 0
    with np.load(seg) as f:
        assert f["segs"].shape == imgs.shape and list(f["class_names"]) == ["background", *NAMES]


def test_a_dataset_file_defines_the_same_dataset(tmp_path, monkeypatch):
    """The JSON file (files relative to it) and the command line give one canonical dataset and
    one tfds config; other files or other classes give another config (no stale build); bad
    definitions are named."""
    _write_cases(tmp_path / "scans", 3)
    (tmp_path / "defs").mkdir()
    spec = tmp_path / "defs" / "mine.json"
    spec.write_text(json.dumps({"name": "mine", "files": "../scans", "classes": {
        "liver": 1, "kidney": 2, "spleen": [3, 4]}}))
    from_file = dataset_argument(str(spec), None, None)
    monkeypatch.chdir(tmp_path)
    from_flags = dataset_argument("mine", "scans", CLASSES)
    assert from_file == from_flags
    config = dataset_spec(from_file)
    assert config == dataset_config(parse_dataset_json(from_flags))
    assert config.name.startswith("mine-") and config.class_names == tuple(NAMES)
    assert config.label_map == ((1, 1), (2, 2), (3, 3), (4, 3))
    other_classes = dataset_argument("mine", "scans", "liver=1,kidney=2,spleen=3,other=4")
    assert dataset_spec(other_classes).name != config.name
    _write_cases(tmp_path / "scans_more", 4)
    (tmp_path / "scans_more" / "scan_0003.npz").rename(tmp_path / "scans" / "scan_0003.npz")
    assert dataset_spec(from_file).name != config.name  # a file was added
    with pytest.raises(UsageError, match="--files needs --classes"):
        dataset_argument("mine", "scans", None)
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        dataset_argument("mine", "scans", "liver")
    with pytest.raises(UsageError, match="distinct integers"):
        dataset_argument("mine", "scans", "liver=1,kidney=1")
    with pytest.raises(UsageError, match="taken by a preset"):
        dataset_argument("brats", "scans", "liver=1")
    with pytest.raises(BadInputError, match="no .npz files for dataset 'mine'"):
        dataset_argument("mine", "nowhere", "liver=1")
    spec.write_text(json.dumps({"name": "mine", "files": "../scans", "classes": {"liver": 1},
                                "colour": "blue"}))
    with pytest.raises(BadInputError, match=r"mine.json: unknown dataset fields \['colour'\]"):
        dataset_argument(str(spec), None, None)
    with pytest.raises(UsageError, match="unknown dataset 'bratz'"):
        dataset_spec("bratz")
