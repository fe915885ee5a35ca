"""Building datasets with tfds from challenge-format npz files written here, bad files included."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from automedsam_jax.data import prepare, read_npz
from automedsam_jax.data.presets import ABDOMENCT1K, BRATS, CHESTXML, KVASIR
from automedsam_jax.data.labels import remove_small_objects
from automedsam_jax.data.splits import split_cases
from automedsam_jax.data.synthetic import SyntheticConfig, synthetic_case
from automedsam_jax.io.errors import BadInputError


def ct_name(i: int) -> str:
    return f"CT_AbdomenCT-1K_case{i:02d}"


def write_ct_cases(directory: Path, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``n`` 3D abdomen-CT-like files (labels 1..4) from synthetic volumes; returns the arrays."""
    written = {}
    for i in range(n):
        vol = synthetic_case(SyntheticConfig(num_classes=4, depth=5, height=32, width=40, seed=7), i)
        name = ct_name(i)
        imgs, gts = vol.image[..., 0], vol.label
        np.savez_compressed(directory / f"{name}.npz", imgs=imgs, gts=gts,
                            spacing=np.array([2.5, 0.8, 0.8]))
        written[name] = imgs, gts
    return written


def test_read_npz_2d_rgb_and_255_masks(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gts = np.zeros((20, 30), np.uint8)
    gts[5:9, 3:7] = 1
    np.savez_compressed(tmp_path / "Endoscopy_Kvasir-SEG_a.npz", imgs=rgb, gts=gts)
    vol = read_npz(tmp_path / "Endoscopy_Kvasir-SEG_a.npz", KVASIR)
    assert vol.case_id == "Endoscopy_Kvasir-SEG_a" and vol.image.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(vol.image[0], rgb)
    np.testing.assert_array_equal(vol.label[0], gts)
    np.testing.assert_array_equal(vol.spacing, [1, 1, 1])
    np.savez_compressed(tmp_path / "x.npz", imgs=rgb[..., 0], gts=gts * 255)
    vol = read_npz(tmp_path / "x.npz", CHESTXML)
    assert vol.image.shape == (1, 20, 30, 1)
    np.testing.assert_array_equal(vol.label[0], gts)


def bad_files(directory: Path) -> dict[str, str]:
    """Write one bad file per problem; returns file name → expected message fragment."""
    img, gts = np.zeros((4, 16, 16), np.uint8), np.zeros((4, 16, 16), np.uint8)
    gts[1, 4:8, 4:8] = 1
    sp = np.ones(3)
    cases = {
        "missing_keys": dict(imgs=img, spacing=sp),
        "shape_mismatch": dict(imgs=img, gts=gts[:, :8], spacing=sp),
        "non_integer": dict(imgs=img, gts=gts + 0.5, spacing=sp),
        "out_of_range": dict(imgs=img, gts=gts.astype(np.int16) * -3, spacing=sp),
        "unknown_label": dict(imgs=img, gts=gts * 9, spacing=sp),
        "nan_pixels": dict(imgs=np.where(gts > 0, np.nan, 1.0), gts=gts, spacing=sp),
        "sixteen_bit": dict(imgs=img.astype(np.uint16), gts=gts, spacing=sp),
        "no_spacing": dict(imgs=img, gts=gts),
    }
    for name, arrays in cases.items():
        np.savez_compressed(directory / f"CT_AbdomenCT_bad_{name}.npz", **arrays)
    good = directory / "CT_AbdomenCT_bad_truncated.npz"
    np.savez_compressed(good, imgs=img, gts=gts, spacing=sp)
    good.write_bytes(good.read_bytes()[:200])
    (directory / "CT_AbdomenCT_bad_not_npz.npz").write_text("hello")
    return {"missing_keys": "missing keys ['gts']", "shape_mismatch": "do not match",
            "non_integer": "non-integer", "out_of_range": "out of range",
            "unknown_label": "unexpected label values [9]", "nan_pixels": "NaN or Inf",
            "sixteen_bit": "uint16, expected uint8", "no_spacing": "no 'spacing'",
            "truncated": "not a complete zip archive", "not_npz": "not a complete zip archive"}


def test_each_bad_file_names_file_and_problem(tmp_path):
    expected = bad_files(tmp_path)
    for name, fragment in expected.items():
        path = tmp_path / f"CT_AbdomenCT_bad_{name}.npz"
        with pytest.raises(BadInputError) as err:
            read_npz(path, ABDOMENCT1K)
        assert str(path) in str(err.value) and fragment in str(err.value), (name, str(err.value))
    rgba = tmp_path / "rgba.npz"
    np.savez_compressed(rgba, imgs=np.zeros((8, 8, 4), np.uint8), gts=np.zeros((8, 8), np.uint8))
    with pytest.raises(BadInputError, match=RGBA_REFUSED):
        read_npz(rgba, KVASIR)


RGBA_REFUSED = (r"expected an image of shape \(H, W\) or \(H, W, 3\), got \(8, 8, 4\); convert "
                "RGBA or multi-channel images to RGB or grayscale first")


def test_one_image_rule_for_a_four_channel_image(tmp_path):
    """A 2D RGBA array is refused with the same named error by preprocessing, the dataset reader
    and the scan reader of predict (which once read it as a volume of 4-pixel-wide slices and
    predicted nothing); a PNG with alpha is decoded to RGB, the documented conversion."""
    from PIL import Image

    from automedsam_jax.core.config import LITEMEDSAM_FRAME
    from automedsam_jax.core.preprocess import preprocess_image
    from automedsam_jax.io.scans import read_scan

    rgba = np.random.default_rng(0).integers(0, 255, (8, 8, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=RGBA_REFUSED):
        preprocess_image(rgba, LITEMEDSAM_FRAME)
    np.savez(tmp_path / "rgba.npz", imgs=rgba, gts=np.zeros((8, 8), np.uint8))
    with pytest.raises(BadInputError, match=RGBA_REFUSED):
        read_npz(tmp_path / "rgba.npz", KVASIR)
    with pytest.raises(BadInputError, match=RGBA_REFUSED):
        read_scan(tmp_path / "rgba.npz")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    scan = read_scan(tmp_path / "rgba.png")
    assert not scan.volume
    np.testing.assert_array_equal(scan.slices, rgba[None, ..., :3])  # alpha dropped


def test_build_3d_skips_and_lists_bad_files(tmp_path, caplog):
    manual = tmp_path / "manual"
    manual.mkdir()
    expected_bad = bad_files(manual)
    # A split whose files are all bad is an error (tested below); take enough good cases that
    # every split of the (deterministic) assignment holds one.
    bad_ids = [f"CT_AbdomenCT_bad_{n}" for n in expected_bad]
    n_good = next(n for n in range(3, 40) if all(
        any(c.startswith("CT_AbdomenCT-1K") for c in part)
        for part in split_cases(bad_ids + [ct_name(i) for i in range(n)]).values()))
    written = write_ct_cases(manual, n_good)
    with caplog.at_level(logging.WARNING):
        builder = prepare("abdomenct1k", tmp_path / "data", manual_dir=manual)
    meta = builder.info.metadata
    assert meta["class_names"] == ["liver", "kidney", "spleen", "pancreas"]
    skipped = meta["skipped_files"]
    assert sorted(Path(p).name for p in skipped) == sorted(
        f"CT_AbdomenCT_bad_{n}.npz" for n in expected_bad)
    log_text = caplog.text
    assert f"{len(expected_bad)} bad input files were skipped" in log_text
    assert all(f"CT_AbdomenCT_bad_{n}.npz" in log_text for n in expected_bad)
    # Every good case is in exactly one split; bad ones are assigned but produce no records.
    splits = meta["splits"]
    assert sorted(sum(splits.values(), [])) == sorted(
        list(written) + [f"CT_AbdomenCT_bad_{n}" for n in expected_bad])
    for split in ("train", "validation", "test"):
        source = builder.as_data_source(split)
        records = [source[i] for i in range(len(source))]
        good = [c for c in splits[split] if c in written]
        assert {r["case_id"].decode() for r in records} == set(good)
        for r in records:
            imgs, gts = written[r["case_id"].decode()]
            if split == "train":  # without MedSAM's small objects (tests/test_release_layouts)
                gts = remove_small_objects(gts)
            z = r["slice_index"]
            np.testing.assert_array_equal(r["image"][..., 0], imgs[z])
            np.testing.assert_array_equal(r["label"], gts[z])
            np.testing.assert_array_equal(r["spacing"], np.float32([2.5, 0.8, 0.8]))
            assert r["depth"] == 5
        # Every slice, case by case in z order: the validation and test splits always, the
        # training split because abdomenct1k keeps its organ-free slices as negatives.
        assert [(r["case_id"].decode(), r["slice_index"]) for r in records] == [
            (c, z) for c in good for z in range(5)]
    assert ABDOMENCT1K.train_empty_slices
    assert "tensorflow" not in sys.modules


def test_build_strict_fails_on_first_bad_file(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    write_ct_cases(manual, 4)
    (manual / "CT_AbdomenCT_zz_broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BadInputError, match="CT_AbdomenCT_zz_broken.npz: unreadable npz"):
        prepare("abdomenct1k", tmp_path / "data", manual_dir=manual, strict=True)


def test_build_split_with_only_bad_files_is_an_error(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for i in range(3):  # three cases: one per split, all unreadable
        (manual / f"MR_BraTS_FLAIR_{i}.npz").write_text("not an archive")
    with pytest.raises(BadInputError, match=r"manual: no usable file for dataset 'brats' "
                       r"\(3 file\(s\) checked; MR_BraTS_FLAIR_0.npz: unreadable npz.*MR_BraTS_FLAIR_2"):
        prepare("brats", tmp_path / "data", manual_dir=manual)
    assert not (tmp_path / "data").exists()  # refused before tfds writes anything


def test_build_empty_or_unmatched_directory(tmp_path):
    """No files yet, an empty folder, files of another dataset: a BadInputError naming the folder,
    what goes there and where the data comes from — before tfds is asked (which used to fail with
    an AssertionError about its manual directory)."""
    wanted = ("dataset 'brats' reads BraTS 2020/2021 (BraTS2021_00000/BraTS2021_00000_{flair,t1,"
              "t1ce,t2,seg}.nii.gz) or 2023/2024 (BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,"
              "t1c,t2w,seg}.nii.gz), .nii or .nii.gz or challenge files MR_BraTS_FLAIR_*.npz from "
              "there")
    for problem in ("does not exist", "holds none"):
        manual = tmp_path / "empty"
        with pytest.raises(BadInputError) as err:
            prepare("brats", tmp_path / "data", manual_dir=manual)
        message = str(err.value)
        assert message.startswith(f"{manual}: {problem}: {wanted} (pass --manual-dir"), message
        assert len(message.splitlines()) == 1
        manual.mkdir(exist_ok=True)
        (manual / "CT_AbdomenCT_0001.npz").write_bytes(b"another dataset's file")
        (manual / "sub" / "BraTS2021_00001").mkdir(parents=True, exist_ok=True)  # no seg
    with pytest.raises(BadInputError) as err:
        prepare("brats", tmp_path / "data")  # <data-dir>/downloads/manual, then <data-dir>
    assert str(err.value).startswith(f"{tmp_path / 'data'}: does not exist: {wanted} or from "
                                     f"{tmp_path / 'data' / 'downloads' / 'manual'} (pass")
    assert BRATS.class_names == ("tumour",)


def test_commands_say_where_the_data_goes_without_a_traceback(tmp_path, capsys):
    """The first command a pod team types, with no files yet: train.py and evaluate.py exit 2
    with one message (no traceback) naming the folder the .npz files go in."""
    from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, SamConfig
    from automedsam_jax.core.init import random_model
    from automedsam_jax.evaluation.cli import main as evaluate_main
    from automedsam_jax.io.checkpoint import save_model
    from train import main as train_main

    data = tmp_path / "D"
    assert train_main(["--dataset", "brats", "--data-dir", str(data), "--workdir",
                       str(tmp_path / "run"), "--no-progress", "--weights", "random"]) == 2
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    model = save_model(random_model(cfg), tmp_path / "model", extra={"class_names": ["tumour"]})
    assert evaluate_main(["--checkpoint", str(model), "--dataset", "brats", "--data-dir",
                          str(data)]) == 2
    for err in capsys.readouterr().err.split("error: ")[1:]:
        assert err.startswith(f"{data}: does not exist: dataset 'brats' reads BraTS 2020/2021 "), err
        assert f"from there or from {data / 'downloads' / 'manual'}" in err
        assert "Traceback" not in err


def test_build_2d_and_kidney_split(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        gts = np.zeros((24, 20), np.uint8)
        gts[3 + i:10, 4:12] = 255
        np.savez_compressed(manual / f"XRay_Chest-Xray-Masks-and-Labels_{i}.npz",
                            imgs=rng.integers(0, 256, (24, 20, 3), dtype=np.uint8), gts=gts)
    builder = prepare("chestxml", tmp_path / "data", manual_dir=manual)
    total = sum(len(builder.as_data_source(s)) for s in ("train", "validation", "test"))
    assert total == 3
    r = builder.as_data_source("train")[0]
    assert r["image"].shape == (24, 20, 3) and set(np.unique(r["label"])) == {0, 1}
    # Kidney split: body in columns 4..35 (midline 19.5); kidney label 2 on both sides.
    for i in range(3):
        imgs = np.zeros((2, 16, 40), np.uint8)
        imgs[:, 2:14, 4:36] = 90
        gts = np.zeros((2, 16, 40), np.uint8)
        gts[:, 5:9, 8:12] = 2
        gts[:, 5:9, 26:31] = 2
        gts[:, 10:12, 15:25] = 1
        np.savez_compressed(manual / f"CT_AbdomenCT-1K_{i}.npz", imgs=imgs, gts=gts,
                            spacing=np.ones(3))
    builder = prepare("abdomenct1k_split_kidney", tmp_path / "data", manual_dir=manual)
    assert builder.info.metadata["class_names"][1] == "kidney_right"
    assert builder.info.metadata["class_names"][4] == "kidney_left"
    r = builder.as_data_source("test")[0]
    assert np.all(r["label"][5:9, 8:12] == 2) and np.all(r["label"][5:9, 26:31] == 5)
    assert np.all(r["label"][10:12, 15:25] == 1)
