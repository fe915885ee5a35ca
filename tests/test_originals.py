"""The four paper datasets in their owners' layouts (automedsam_jax/data/originals.py), against the
raw files read here independently: nibabel / Pillow, orientation, intensities and labels
mapped in NumPy by hand."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from automedsam_jax.data import prepare
from automedsam_jax.data.builder import dataset_spec
from automedsam_jax.data.originals import (abdomenct1k_cases, brats_cases, chestxml_cases,
                                           kvasir_cases)
from automedsam_jax.data.presets import ABDOMENCT1K_SPLIT_KIDNEY, BRATS, CHESTXML, KVASIR, brats
from automedsam_jax.io.errors import BadInputError, UsageError

SPACING = (0.9, 0.9, 2.5)  # x, y, z mm


def mr_uint8(v: np.ndarray) -> np.ndarray:
    """The MR rule written out: clip to the 0.5/99.5 percentiles of the non-zero voxels, min–max
    to 0..255, zeros stay 0."""
    v = v.astype(np.float64)
    lo, hi = np.percentile(v[v != 0], [0.5, 99.5])
    c = np.clip(v, lo, hi)
    out = np.round((c - c.min()) / (c.max() - c.min()) * 255)
    out[v == 0] = 0
    return out.astype(np.uint8)


def lps_to_zyx(data: np.ndarray) -> np.ndarray:
    """A volume stored in LPS voxel order (affine diag(-sx, -sy, sz)) in the radiological
    (z, y, x) layout — row 0 anterior, column 0 the patient's right — is its plain transpose:
    voxel x runs right → left and y anterior → posterior already."""
    return data.transpose(2, 1, 0)


def write_brats_case(root: Path, case: str, release: int, seed: int, shape=(20, 18, 6),
                     sequences=None) -> dict[str, np.ndarray]:
    """One BraTS case folder with random MR sequences and a tumour (labels 1, 2 and ET), stored
    in LPS voxel order; returns the raw arrays by sequence (and ``seg``)."""
    rng = np.random.default_rng(seed)
    sep = "-" if release == 2023 else "_"
    names = sequences or (("t2f", "t1n", "t1c", "t2w") if release == 2023
                          else ("flair", "t1", "t1ce", "t2"))
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    folder = root / case
    folder.mkdir(parents=True)
    arrays = {}
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, :] = True
    for name in names:
        data = np.where(brain, rng.integers(1, 3000, shape), 0).astype(np.int16)
        nib.save(nib.Nifti1Image(data, affine), folder / f"{case}{sep}{name}.nii.gz")
        arrays[name] = data
    seg = np.zeros(shape, np.uint8)
    seg[5:12, 6:12, 1:4] = 2                       # oedema
    seg[7:10, 8:11, 2:4] = 1                       # necrotic core
    seg[8:10, 8:10, 3] = 4 if release == 2021 else 3  # enhancing
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{case}{sep}seg.nii.gz")
    arrays["seg"] = seg
    return arrays


@pytest.mark.parametrize("release", [2021, 2023])
def test_brats_layout_builds_slices_as_the_raw_files_say(tmp_path, release):
    cases = ([f"BraTS2021_{i:05d}" for i in range(3)] if release == 2021
             else [f"BraTS-GLI-{i:05d}-000" for i in range(3)])
    root = tmp_path / "D" / "release"  # below --data-dir, any depth
    raw = {c: write_brats_case(root, c, release, i) for i, c in enumerate(cases)}
    flair = "flair" if release == 2021 else "t2f"
    builder = prepare("brats", tmp_path / "D")
    splits = builder.info.metadata["splits"]
    assert sorted(sum(splits.values(), [])) == cases  # case ids: the original names
    for split in ("validation", "test"):  # every slice, in z order
        (case,) = splits[split]
        records = list(builder.as_data_source(split))
        assert [r["slice_index"] for r in records] == list(range(6))
        image, label = mr_uint8(raw[case][flair]), (raw[case]["seg"] > 0).astype(np.uint8)
        for r in records:
            z = r["slice_index"]
            assert r["case_id"].decode() == case
            np.testing.assert_array_equal(r["image"][..., 0], lps_to_zyx(image)[z])
            np.testing.assert_array_equal(r["label"], lps_to_zyx(label)[z])
            np.testing.assert_allclose(r["spacing"], SPACING[::-1])
    train = list(builder.as_data_source("train"))  # every slice: the tumour-free as negatives
    assert [r["slice_index"] for r in train] == list(range(6))
    assert [r["slice_index"] for r in train if r["label"].any()] == [1, 2, 3]

    # The BraTS regions' parts as classes, three sequences as channels: built apart.
    variant = dataset_spec("brats:sequences=t1ce+t2+flair,classes=subregions")
    assert variant.name == "brats-t1ce-t2-flair-subregions"
    case = splits["test"][0]
    volume = brats_cases(root, variant)[case]()
    names = ("t1ce", "t2", "flair") if release == 2021 else ("t1c", "t2w", "t2f")
    for channel, name in enumerate(names):
        np.testing.assert_array_equal(volume.image[..., channel],
                                      lps_to_zyx(mr_uint8(raw[case][name])))
    seg = raw[case]["seg"]
    expected = np.select([seg == 1, seg == 2, seg == (4 if release == 2021 else 3)], [1, 2, 3], 0)
    np.testing.assert_array_equal(volume.label, lps_to_zyx(expected))
    assert prepare(variant, tmp_path / "D").info.metadata["class_names"] == [
        "necrotic_core", "oedema", "enhancing_tumour"]


def test_brats_options_and_bad_cases_are_named(tmp_path):
    assert brats() is BRATS and brats("t2f") is BRATS
    from train import main as train_main

    for bad in ("brats:sequences=flair+t1", "brats:sequences=dwi", "brats:classes=core",
                "brats:colour=red"):
        with pytest.raises(UsageError, match="--dataset 'brats:"):
            dataset_spec(bad)
    assert train_main(["--dataset", "brats:classes=core", "--workdir", str(tmp_path / "w")]) == 2
    assert not (tmp_path / "w").exists()  # refused while the command line is read
    root = tmp_path / "brats"
    write_brats_case(root, "BraTS2021_00001", 2021, 0, sequences=("t1", "t2"))  # no flair
    write_brats_case(root, "BraTS2021_00002", 2021, 1)
    seg = root / "BraTS2021_00002" / "BraTS2021_00002_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 18, 5), np.uint8), nib.load(seg).affine), seg)
    write_brats_case(root, "BraTS2021_00003", 2021, 2)
    seg3 = root / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    data = np.asanyarray(nib.load(seg3).dataobj).copy()
    data[0, 0, 0] = 3  # a 2023 value in a 2021 case
    nib.save(nib.Nifti1Image(data, nib.load(seg3).affine), seg3)
    readers = brats_cases(root, BRATS)
    problems = {}
    for case, read in readers.items():
        with pytest.raises(BadInputError) as err:
            read()
        problems[case] = err.value
    missing = problems["BraTS2021_00001"]
    assert missing.path.endswith("BraTS2021_00001/BraTS2021_00001_flair.nii.gz")
    assert "case BraTS2021_00001: its flair sequence is missing" in missing.problem
    assert problems["BraTS2021_00002"].path == str(seg)
    assert ("case BraTS2021_00002: label shape (5, 18, 20) does not match the image's "
            "(6, 18, 20) (BraTS2021_00002_flair.nii.gz)") in problems["BraTS2021_00002"].problem
    assert problems["BraTS2021_00003"].problem == (
        "case BraTS2021_00003: unexpected label values [3] for the BraTS 2020/2021 naming "
        "(expected 0 and [1, 2, 4])")
    # None usable: refused before tfds writes anything, every case named.
    with pytest.raises(BadInputError, match=r"no usable file for dataset 'brats' \(3 file\(s\)"):
        prepare("brats", tmp_path / "data", manual_dir=root)
    assert not (tmp_path / "data").exists()


def test_abdomenct1k_layout_on_the_demo_ct(tmp_path, caplog):
    """The demo CT written as AbdomenCT-1K: Case_00001_0000.nii.gz with a Case_00001.nii.gz mask
    whose TotalSegmentator ids are mapped to AbdomenCT-1K's (1 liver, 2 kidney, 3 spleen,
    4 pancreas); the kidney split at the body midline."""
    from automedsam_jax.data.demo import fetch_demo_files

    files = fetch_demo_files()
    ct = nib.load(files["full_image"])
    ts = np.asanyarray(nib.load(files["full_label"]).dataobj)
    mask = np.select([ts == 5, (ts == 2) | (ts == 3), ts == 1, ts == 7], [1, 2, 3, 4], 0)
    (tmp_path / "AbdomenCT-1K-ImagePart1").mkdir()
    (tmp_path / "Mask").mkdir()
    shutil.copy(files["full_image"], tmp_path / "AbdomenCT-1K-ImagePart1" / "Case_00001_0000.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), ct.affine),
             tmp_path / "Mask" / "Case_00001.nii.gz")
    shutil.copy(files["full_image"], tmp_path / "AbdomenCT-1K-ImagePart1" / "Case_00002_0000.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), ct.affine),
             tmp_path / "Mask" / "Case_00003.nii.gz")  # a mask without its image
    with caplog.at_level(logging.INFO):
        readers = abdomenct1k_cases(tmp_path, ABDOMENCT1K_SPLIT_KIDNEY)
    assert sorted(readers) == ["Case_00001", "Case_00003"]
    assert "1 images without a mask are not used (Case_00002)" in caplog.text
    with pytest.raises(BadInputError, match="Case_00003.nii.gz: case Case_00003: no image "
                                            "Case_00003_0000.nii.gz"):
        readers["Case_00003"]()
    volume = readers["Case_00001"]()

    # Independently: nibabel's closest canonical (RAS) → (z, y, x), rows anterior first,
    # columns the patient's right first; window 40/400 HU by hand.
    ras = np.asanyarray(nib.as_closest_canonical(ct).dataobj).astype(np.float64)
    hu = ras.transpose(2, 1, 0)[:, ::-1, ::-1]
    windowed = np.round((np.clip(hu, -160, 240) + 160) / 400 * 255).astype(np.uint8)
    np.testing.assert_array_equal(volume.image[..., 0], windowed)
    labels = nib.as_closest_canonical(nib.Nifti1Image(mask.astype(np.uint8), ct.affine))
    labels = np.asanyarray(labels.dataobj).transpose(2, 1, 0)[:, ::-1, ::-1]
    midline = np.nonzero(windowed)[2].mean()  # the body: non-zero after windowing
    cols = np.arange(labels.shape[2])
    expected = np.where((labels == 2) & (cols >= midline), 5, labels)
    np.testing.assert_array_equal(volume.label, expected)
    assert {1, 2, 3, 4, 5} <= set(np.unique(volume.label))
    np.testing.assert_allclose(volume.spacing, nib.as_closest_canonical(ct).header.get_zooms()[::-1])


def write_2d(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95) if path.suffix == ".jpg" else \
        Image.fromarray(array).save(path)


def test_kvasir_layout(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "D" / "Kvasir-SEG"
    for i in range(3):
        write_2d(root / "images" / f"polyp{i}.jpg", rng.integers(0, 256, (30, 40, 3), np.uint8))
        m = np.zeros((30, 40, 3), np.uint8)
        m[5 + i:20, 10:30] = 255
        write_2d(root / "masks" / f"polyp{i}.jpg", m)
    builder = prepare("kvasir", tmp_path / "D")
    records = [r for s in ("train", "validation", "test") for r in builder.as_data_source(s)]
    assert sorted(r["case_id"].decode() for r in records) == ["polyp0", "polyp1", "polyp2"]
    for r in records:
        name = r["case_id"].decode()
        image = np.asarray(Image.open(root / "images" / f"{name}.jpg").convert("RGB"))
        mask = np.asarray(Image.open(root / "masks" / f"{name}.jpg").convert("L")) > 127
        np.testing.assert_array_equal(r["image"], image)
        np.testing.assert_array_equal(r["label"], mask)
        assert r["depth"] == 1 and r["label"].sum() > 0
    write_2d(root / "images" / "lonely.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BadInputError, match=r"masks/lonely.jpg: case lonely: its mask is missing"):
        kvasir_cases(tmp_path, KVASIR)["lonely"]()


def test_chestxml_layout(tmp_path, caplog):
    rng = np.random.default_rng(1)
    root = tmp_path / "Lung Segmentation"
    masks = {}
    for name, mask_name in (("CHNCXR_0001_0", "CHNCXR_0001_0_mask.png"),   # Shenzhen
                            ("CHNCXR_0002_1", "CHNCXR_0002_1_mask.png"),
                            ("MCUCXR_0001_0", "MCUCXR_0001_0.png")):       # Montgomery
        write_2d(root / "CXR_png" / f"{name}.png", rng.integers(0, 256, (24, 20), np.uint8))
        m = np.zeros((24, 20), np.uint8)
        m[4:20, 2:9] = m[4:20, 11:18] = 255
        write_2d(root / "masks" / mask_name, m)
        masks[name] = m
    sixteen = (rng.integers(0, 4096, (24, 20))).astype(np.uint16)
    write_2d(root / "CXR_png" / "MCUCXR_0002_1.png", sixteen)  # 16-bit grey
    write_2d(root / "masks" / "MCUCXR_0002_1.png", masks["MCUCXR_0001_0"])
    write_2d(root / "CXR_png" / "CHNCXR_0003_0.png", np.zeros((24, 20), np.uint8))  # no mask
    with caplog.at_level(logging.INFO):
        readers = chestxml_cases(tmp_path, CHESTXML)
    assert sorted(readers) == ["CHNCXR_0001_0", "CHNCXR_0002_1", "MCUCXR_0001_0", "MCUCXR_0002_1"]
    assert "1 images without a mask are not used (CHNCXR_0003_0)" in caplog.text
    for name in ("CHNCXR_0001_0", "MCUCXR_0001_0"):
        volume = readers[name]()
        np.testing.assert_array_equal(volume.image[0, ..., 0],
                                      np.asarray(Image.open(root / "CXR_png" / f"{name}.png")))
        np.testing.assert_array_equal(volume.label[0], masks[name] == 255)
    lo, hi = int(sixteen.min()), int(sixteen.max())
    np.testing.assert_array_equal(readers["MCUCXR_0002_1"]().image[0, ..., 0],
                                  np.round((sixteen - lo) / (hi - lo) * 255).astype(np.uint8))
    bad = masks["CHNCXR_0001_0"].copy()
    bad[0, 0] = 128
    write_2d(root / "masks" / "CHNCXR_0001_0_mask.png", bad)
    with pytest.raises(BadInputError, match=r"CHNCXR_0001_0_mask.png: case CHNCXR_0001_0: "
                                            r"unexpected label values \[128\]"):
        readers["CHNCXR_0001_0"]()
    write_2d(root / "masks" / "CHNCXR_0002_1_mask.png", np.zeros((10, 20), np.uint8))
    with pytest.raises(BadInputError, match=r"label shape \(1, 10, 20\) does not match the "
                                            r"image's \(1, 24, 20\) \(CHNCXR_0002_1.png\)"):
        readers["CHNCXR_0002_1"]()


@pytest.mark.slow
def test_brats_sample_trains_and_evaluates(tmp_path, capsys, sd):
    """The README's offline BraTS run: pyradiomics' two brain MR cases in the BraTS 2021 layout,
    `train.py --dataset brats --data-dir D` (one training case, one test case) and evaluate.py
    on the test case (predict on a NIfTI: tests/test_predict.py)."""
    from automedsam_jax.data.brats_sample import write_brats_sample
    from automedsam_jax.evaluation.cli import main as evaluate_main
    from train import main as train_main

    data, run = tmp_path / "brats", tmp_path / "run"
    folders = write_brats_sample(data)
    assert [f.name for f in folders] == ["BraTS2021_brain1", "BraTS2021_brain2"]
    # The FLAIR file is the NRRD's voxels with its LPS geometry in NIfTI's RAS affine.
    import nrrd
    from automedsam_jax.data.brats_sample import fetch_nrrd_files
    voxels, header = nrrd.read(str(fetch_nrrd_files()["brain1_image"]))
    flair = nib.load(folders[0] / "BraTS2021_brain1_flair.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(flair.dataobj), voxels)
    np.testing.assert_allclose(flair.affine[:3, 3], np.asarray(header["space origin"]) * [-1, -1, 1])
    # The NRRD's space directions (LPS): +x, −y, +z → voxel axes towards L, A and S.
    np.testing.assert_allclose(np.asarray(header["space directions"]).diagonal(),
                               [0.78125, -0.78125, 6.5], atol=1e-6)
    assert nib.aff2axcodes(flair.affine) == ("L", "A", "S")

    assert train_main(["--dataset", "brats", "--data-dir", str(data), "--workdir", str(run),
                       "--backbone", "litemedsam", "--weights", "pretrained",
                       "--cache-embeddings", "true", "--epochs", "1", "--batch-size", "4",
                       "--variants", "0",  # the cache of plain slices only: 9× fewer to embed
                       "--no-progress"]) == 0
    assert evaluate_main(["--checkpoint", str(run), "--lesion-wise"]) == 0
    out = capsys.readouterr().out
    assert "brats, test split: 1 case, 23 slices" in out and "| DSC (%) |" in out
    assert "| region | cases | Dice (%) mean ± std |" in out

    # The release folder → the submission files: one per case, the FLAIR's grid, WT as label 2.
    import json
    from automedsam_jax.predict import main as predict_main
    assert predict_main([str(data), "--checkpoint", str(run), "--out",
                         str(tmp_path / "submission")]) == 0
    for folder in folders:
        written = nib.load(tmp_path / "submission" / f"{folder.name}.nii.gz")
        flair = nib.load(folder / f"{folder.name}_flair.nii.gz")
        assert written.shape == flair.shape and written.get_data_dtype() == np.uint8
        np.testing.assert_allclose(written.affine, flair.affine)
        assert set(np.unique(np.asanyarray(written.dataobj)).tolist()) <= {0, 2}

    # WT (the one class) against surface-distance on the case as predict reads it from its
    # files: the test case's submission file, the GT of its seg file, the file's zooms.
    metrics = json.loads((run / "eval" / "brats_test" / "metrics.json").read_text())
    wt = metrics["regions"]["WT"]
    assert wt["classes"] == [1] and wt["cases"] == 1
    assert set(wt) >= {"dsc", "hd95", "sensitivity", "specificity", "nsd", "lesion_dsc",
                       "lesion_hd95", "median", "std"}
    (case,) = [c["case_id"] for c in metrics["per_case"]]
    pred = np.asanyarray(nib.load(tmp_path / "submission" / f"{case}.nii.gz").dataobj) > 0
    seg = nib.load(data / case / f"{case}_seg.nii.gz")
    gt = np.asanyarray(seg.dataobj) > 0
    want_dsc = 2 * (gt & pred).sum() / (gt.sum() + pred.sum())
    assert wt["dsc"] == pytest.approx(want_dsc, abs=0.01)
    distances = sd.compute_surface_distances(gt, pred, seg.header.get_zooms())
    want_hd = sd.compute_robust_hausdorff(distances, 95)
    want_hd = 373.13 if math.isinf(want_hd) else want_hd  # one of them empty
    assert wt["hd95"] == pytest.approx(want_hd, abs=float(max(seg.header.get_zooms())))
    assert metrics["per_case"][0]["regions"]["WT"]["dsc"] == wt["dsc"]
