"""Every bad file (or value) is refused by name: each row runs a real command in-process —
``predict``, ``evaluate.py`` or ``train.py`` — on files written here, and the command exits 2
with exactly one line on stderr, ``error: ...``, naming the file (or the value) and no
traceback, having written nothing (no output file, no output, work or data directory) and
loaded or built no model."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import automedsam_jax.evaluation.cli as evaluate_cli
import automedsam_jax.predict as predict_cli
from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.io.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["liver", "spleen"]


def _train_module():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_cli = _train_module()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny AutoMedSAM model directory (outside the rows' tmp_path) knowing liver and spleen."""
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    return save_model(random_model(cfg, seed=0), tmp_path_factory.mktemp("m") / "model",
                      extra={"class_names": NAMES})


# -- the bad files -----------------------------------------------------------------------------
RNG = np.random.default_rng(0)


def png(path: Path) -> Path:
    Image.fromarray(RNG.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
    return path


def nifti(path: Path) -> Path:
    data = RNG.integers(-1000, 1000, (16, 16, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def truncated(make: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        data = make(path).read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path
    return write


def garbage(path: Path) -> Path:
    path.write_bytes(RNG.bytes(600))
    return path


def npz(**arrays) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        np.savez(path, **arrays)
        return path
    return write


def case(labels: tuple[int, ...], depth: int = 4) -> Callable[[Path], Path]:
    """A 3D challenge file (imgs, gts, spacing) holding ``labels`` (a block each)."""
    gts = np.zeros((depth, 16, 16), np.uint8)
    for i, value in enumerate(labels):
        gts[:, 2 + 4 * i:5 + 4 * i, 3:9] = value
    return npz(imgs=RNG.integers(0, 256, (depth, 16, 16), dtype=np.uint8), gts=gts,
               spacing=np.array([2.0, 1.0, 1.0]))


def folder(*files: tuple[str, Callable[[Path], Path]]) -> Callable[[Path], Path]:
    """A user dataset's folder of files."""
    def write(path: Path) -> Path:
        path.mkdir()
        for name, make in files:
            make(path / name)
        return path
    return write


# -- the commands --------------------------------------------------------------------------------
def predict(src: Path, tmp: Path, model: Path, *extra: str) -> list[str]:
    return [str(src), "--checkpoint", str(model), "--out", str(tmp / "out"), *extra]


def evaluate(src: Path | None, tmp: Path, model: Path, *extra: str) -> list[str]:
    files = ["--files", str(src)] if src is not None else []
    return ["--checkpoint", str(model), *files, "--data-dir", str(tmp / "data"), "--out",
            str(tmp / "eval"), *extra]


def train(src: Path | None, tmp: Path, model: Path, *extra: str) -> list[str]:
    files = ["--files", str(src)] if src is not None else []
    return [*files, "--data-dir", str(tmp / "data"), "--workdir", str(tmp / "run"),
            "--backbone", "tiny_litemedsam", "--weights", "random", "--epochs", "1",
            "--batch-size", "2", "--no-progress", *extra]


MAINS = {predict: lambda: predict_cli.main, evaluate: lambda: evaluate_cli.main,
         train: lambda: train_cli.main}

OTHER_LABELS = folder(("scan_a.npz", case((1, 2))), ("scan_b.npz", case((1, 3))))
CORRUPT = folder(("scan_a.npz", garbage), ("scan_b.npz", truncated(case((1,)))))

# id: (command, input name, writer or None, extra options, what the one line must name)
ROWS = {
    "npz-volume-without-slices": (
        predict, "empty.npz", npz(imgs=np.zeros((0, 16, 16), np.uint8),
                                  spacing=np.array([1.0, 1.0, 1.0])), (),
        ["empty.npz", "no slices", "(0, 16, 16)"]),
    "npz-empty-2d-image": (
        predict, "flat.npz", npz(imgs=np.zeros((16, 0), np.uint8)), (),
        ["flat.npz", "an empty image", "(16, 0)"]),
    "nifti-random-bytes": (
        predict, "noise.nii.gz", garbage, (), ["noise.nii.gz", "not a readable NIfTI"]),
    "nifti-uncompressed-random-bytes": (
        predict, "noise.nii", garbage, (), ["noise.nii", "not a readable NIfTI"]),
    "nifti-without-voxels": (
        predict, "hollow.nii.gz",
        lambda p: (nib.save(nib.Nifti1Image(np.zeros((16, 16, 0), np.int16), np.eye(4)), p), p)[1],
        (), ["hollow.nii.gz", "a NIfTI volume with no voxels", "(16, 16, 0)"]),
    "nifti-truncated-gzip": (
        predict, "cut.nii.gz", truncated(nifti), (), ["cut.nii.gz", "not a readable NIfTI"]),
    "png-truncated": (
        predict, "cut.png", truncated(png), (), ["cut.png", "corrupt .png image"]),
    "png-garbage": (
        predict, "noise.png", garbage, (), ["noise.png", "not a readable .png image"]),
    "png-empty-file": (
        predict, "empty.png", lambda p: (p.write_bytes(b""), p)[1], (),
        ["empty.png", "not a readable .png image"]),
    "predict-unknown-class": (
        predict, "ok.png", png, ("--classes", "liver,lung"),
        ["unknown class 'lung'", "1 liver, 2 spleen"]),
    "predict-classes-name-nothing": (
        predict, "ok.png", png, ("--classes", ","), ["--classes ','", "names no class"]),
    "predict-classes-empty": (
        predict, "ok.png", png, ("--classes", ""), ["--classes ''", "names no class"]),
    "predict-batch-size-zero": (
        predict, "ok.png", png, ("--batch-size", "0"), ["--batch-size must be >= 1, got 0"]),
    "evaluate-unknown-dataset": (
        evaluate, None, None, ("--dataset", "nosuch"), ["unknown dataset 'nosuch'"]),
    "evaluate-batch-size-zero": (
        evaluate, None, None, ("--batch-size", "0"), ["--batch-size must be >= 1, got 0"]),
    "evaluate-box-offset-negative": (
        evaluate, None, None, ("--prompt", "box", "--box-offset", "-3"),
        ["--box-offset", "'-3'"]),
    "evaluate-box-offset-without-box-prompt": (
        evaluate, None, None, ("--box-offset", "3"), ["--box-offset needs --prompt box"]),
    **{f"{cmd.__name__}-user-files-hold-other-labels": (
        cmd, "other_labels", OTHER_LABELS, ("--classes", "spleen=1"),
        ["scan_a.npz: unexpected label values [2]", "scan_b.npz: unexpected label values [3]",
         "give those label values a class in --classes"]) for cmd in (train, evaluate)},
    **{f"{cmd.__name__}-user-files-all-corrupt": (
        cmd, "corrupt", CORRUPT, ("--classes", "spleen=1"),
        ["scan_a.npz: unreadable npz", "scan_b.npz: unreadable npz",
         "fix or remove these files"]) for cmd in (train, evaluate)},
    "train-user-files-without-slices": (
        train, "hollow", folder(("scan_a.npz", case((1,), depth=0))), ("--classes", "spleen=1"),
        ["scan_a.npz: 'imgs' is a volume with no slices"]),
    **{f"{cmd.__name__}-classes-{name}": (
        cmd, "good", folder(("scan_a.npz", case((1,)))), ("--classes", value),
        [f"--classes{'' if value == '=1' else ' ' + repr(value)}", repr(value)])
       for cmd in (train, evaluate) for name, value in (("empty", ""), ("no-name", "=1"))},
}


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
                  for p in root.rglob("*"))


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_refused_by_name(row, model, tmp_path, monkeypatch, capsys):
    command, name, write, extra, named = ROWS[row]
    src = None
    if name is not None:
        (tmp_path / "in").mkdir()
        src = write(tmp_path / "in" / name)
    monkeypatch.chdir(tmp_path)  # a default output path would land in tmp_path, and be seen

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded or a run started for a bad input")

    for module, attr in ((predict_cli, "load_automedsam"), (evaluate_cli, "load_automedsam"),
                         (evaluate_cli, "load_sam"), (train_cli, "run")):
        monkeypatch.setattr(module, attr, no_model)
    before = _snapshot(tmp_path)
    capsys.readouterr()

    code = MAINS[command]()(command(src, tmp_path, model, *extra))

    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in named:
        assert text in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # nothing written: no output, work or data directory
    assert not any((tmp_path / d).exists() for d in ("out", "eval", "run", "data", "runs"))
