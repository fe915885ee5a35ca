"""The original releases as their copies ship them (issue 33's reader gaps), each on files laid
out here as the owners publish them: ``.nii`` beside ``.nii.gz``, BraTS 2020 with case 355's
odd segmentation name, BraTS 2024's label 4, unlabelled cases counted in a visible line, a split
with no usable case refused in one line, Montgomery's left + right masks, the Kaggle copy's
``test/`` images, masks in another tree than their images, and MedSAM's small-object removal."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from automedsam_jax.data import prepare
from automedsam_jax.data.builder import dataset_spec
from automedsam_jax.data.labels import MIN_OBJECT_2D, MIN_OBJECT_3D, remove_small_objects
from automedsam_jax.data.originals import (brats_cases, brats_release_labels, chestxml_cases,
                                           kvasir_cases)
from automedsam_jax.data.presets import BRATS, CHESTXML, KVASIR
from automedsam_jax.io.errors import BadInputError
from test_originals import lps_to_zyx, mr_uint8, write_2d, write_brats_case


def _as_nii(folder: Path) -> None:
    """Every ``.nii.gz`` of ``folder`` stored uncompressed as ``.nii`` instead."""
    for path in sorted(folder.glob("*.nii.gz")):
        nib.save(nib.load(path), path.with_name(path.name[:-3]))
        path.unlink()


def test_nii_and_nii_gz_are_read_alike(tmp_path, caplog):
    """A BraTS 2021 folder with one case in ``.nii`` reads all four cases."""
    root = tmp_path / "BraTS2021"
    raw = {f"BraTS2021_{i:05d}": write_brats_case(root, f"BraTS2021_{i:05d}", 2021, i)
           for i in range(4)}
    _as_nii(root / "BraTS2021_00002")
    readers = brats_cases(root, BRATS)
    assert sorted(readers) == sorted(raw)
    volume = readers["BraTS2021_00002"]()
    np.testing.assert_array_equal(volume.image[..., 0],
                                  lps_to_zyx(mr_uint8(raw["BraTS2021_00002"]["flair"])))
    np.testing.assert_array_equal(volume.label, lps_to_zyx(raw["BraTS2021_00002"]["seg"] > 0))


def test_brats_2020_as_the_kaggle_copy_ships_it(tmp_path, caplog):
    """``MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/..._flair.nii`` throughout, case
    355's segmentation named ``W39_1998.09.19_Segm.nii``; the validation release beside it has
    no segmentation: counted in one line."""
    root = tmp_path / "archive" / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    ids = ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_355"]
    raw = {case: write_brats_case(root, case, 2021, i) for i, case in enumerate(ids)}
    for case in ids:
        _as_nii(root / case)
    odd = root / "BraTS20_Training_355"
    (odd / "BraTS20_Training_355_seg.nii").rename(odd / "W39_1998.09.19_Segm.nii")
    validation = tmp_path / "archive" / "MICCAI_BraTS2020_ValidationData"
    for i in range(2):
        case = f"BraTS20_Validation_{i + 1:03d}"
        write_brats_case(validation, case, 2021, 10 + i)
        (validation / case / f"{case}_seg.nii.gz").unlink()
    with caplog.at_level(logging.INFO):
        readers = brats_cases(tmp_path / "archive", BRATS)
    assert sorted(readers) == ids
    assert ("brats: 2 cases without a segmentation are not used (BraTS20_Validation_001, "
            "BraTS20_Validation_002)") in caplog.text
    subregions = dataset_spec("brats:classes=subregions")
    volume = brats_cases(tmp_path / "archive", subregions)["BraTS20_Training_355"]()
    seg = raw["BraTS20_Training_355"]["seg"]
    np.testing.assert_array_equal(volume.label,
                                  lps_to_zyx(np.select([seg == 1, seg == 2, seg == 4],
                                                       [1, 2, 3], 0)))


def test_brats_2024_resection_cavity(tmp_path):
    """BraTS 2024 GLI's label 4 is refused by name unless ``classes=subregions+cavity``, which
    reads it as class 4 and scores it as region RC beside WT / TC / ET (which leave it out)."""
    root = tmp_path / "BraTS2024"
    raw = write_brats_case(root, "BraTS-GLI-02000-000", 2023, 0)
    seg_path = root / "BraTS-GLI-02000-000" / "BraTS-GLI-02000-000-seg.nii.gz"
    seg = raw["seg"].copy()
    seg[14:17, 3:6, 4:6] = 4
    nib.save(nib.Nifti1Image(seg, nib.load(seg_path).affine), seg_path)
    for spec in ("brats", "brats:classes=subregions"):
        ds = dataset_spec(spec)
        ds = BRATS if isinstance(ds, str) else ds
        with pytest.raises(BadInputError, match=r"label 4 \(BraTS 2024's resection cavity\) is "
                                                r"not a class of dataset .*: pass --dataset "
                                                r"brats:classes=subregions\+cavity"):
            brats_cases(root, ds)["BraTS-GLI-02000-000"]()
    cavity = dataset_spec("brats:classes=subregions+cavity")
    assert cavity.name == "brats-flair-subregions-cavity"
    assert cavity.class_names[-1] == "resection_cavity"
    assert dict(cavity.regions) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "RC": (4,)}
    volume = brats_cases(root, cavity)["BraTS-GLI-02000-000"]()
    np.testing.assert_array_equal(volume.label, lps_to_zyx(seg))  # 2023 values = class ids
    # A 2021-named case's 4 is enhancing tumour, never a cavity.
    write_brats_case(root, "BraTS2021_00009", 2021, 1)
    label = brats_cases(root, cavity)["BraTS2021_00009"]().label
    assert set(np.unique(label)) == {0, 1, 2, 3}


def test_release_label_values():
    labels = np.array([[0, 1, 2, 3]], np.uint8)
    subregions = dataset_spec("brats:classes=subregions")
    np.testing.assert_array_equal(brats_release_labels(labels, subregions, "BraTS2021_00000"),
                                  [[0, 1, 2, 4]])
    np.testing.assert_array_equal(brats_release_labels(labels, subregions, "BraTS20_Validation_001"),
                                  [[0, 1, 2, 4]])
    np.testing.assert_array_equal(brats_release_labels(labels, subregions, "BraTS-GLI-00001-000"),
                                  [[0, 1, 2, 3]])
    cavity = dataset_spec("brats:classes=subregions+cavity")
    np.testing.assert_array_equal(
        brats_release_labels(np.array([[0, 1, 2, 3, 4]], np.uint8), cavity, "BraTS-GLI-1-000"),
        [[0, 1, 2, 3, 4]])
    whole = np.array([[0, 1, 1]], np.uint8)  # one class: counted in WT only
    np.testing.assert_array_equal(brats_release_labels(whole, BRATS, "BraTS2021_1"), [[0, 2, 2]])


def test_a_split_with_no_usable_case_is_one_line_and_leaves_nothing(tmp_path):
    """Three cases split one per split; the test split's case is broken, which the usable-file
    check passes over (another case reads fine): one BadInputError naming the split and the
    file, and no dataset left half-built."""
    from automedsam_jax.data.splits import split_cases

    root = tmp_path / "brats"
    ids = [f"BraTS2021_{i:05d}" for i in range(3)]
    for i, case in enumerate(ids):
        write_brats_case(root, case, 2021, i)
    test_case = split_cases(ids)["test"][0]
    bad = root / test_case / f"{test_case}_seg.nii.gz"
    bad.write_bytes(b"not a NIfTI")
    with pytest.raises(BadInputError) as err:
        prepare("brats", tmp_path / "data", manual_dir=root)
    message = str(err.value)
    assert "\n" not in message
    assert f"no usable file for the test split of dataset 'brats'" in message
    assert f"{test_case}_seg.nii.gz" in message
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_the_apps_show_the_readers_counts(tmp_path, capfd):
    """``configure_logging`` (called first by train.py, evaluate.py and predict) lets the
    readers' INFO lines through, so the count of unlabelled cases is seen."""
    from automedsam_jax.io.cli import configure_logging

    logger = logging.getLogger("automedsam_jax")
    level = logger.level
    try:
        configure_logging()
        logging.getLogger("automedsam_jax.data.originals").info("brats: 2 cases without ...")
        assert "brats: 2 cases without ..." in capfd.readouterr().err
    finally:
        logger.setLevel(level)


def _lungs(shape=(24, 20)):
    left, right = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    left[4:20, 2:9] = 255
    right[4:20, 11:18] = 255
    return left, right


def test_montgomery_left_and_right_masks_are_merged(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "NLM-MontgomeryCXRSet" / "MontgomerySet"
    left, right = _lungs()
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1"):
        write_2d(root / "CXR_png" / f"{name}.png", rng.integers(0, 256, (24, 20), np.uint8))
        write_2d(root / "ManualMask" / "leftMask" / f"{name}.png", left)
        write_2d(root / "ManualMask" / "rightMask" / f"{name}.png", right)
    readers = chestxml_cases(tmp_path, CHESTXML)
    assert sorted(readers) == ["MCUCXR_0001_0", "MCUCXR_0002_1"]
    np.testing.assert_array_equal(readers["MCUCXR_0001_0"]().label[0], (left | right) == 255)


def test_kaggle_test_images_are_counted(tmp_path, caplog):
    rng = np.random.default_rng(1)
    root = tmp_path / "Lung Segmentation"
    left, right = _lungs()
    write_2d(root / "CXR_png" / "CHNCXR_0001_0.png", rng.integers(0, 256, (24, 20), np.uint8))
    write_2d(root / "masks" / "CHNCXR_0001_0_mask.png", left | right)
    for i in range(3):
        write_2d(root / "test" / f"{i}.png", rng.integers(0, 256, (24, 20), np.uint8))
    with caplog.at_level(logging.INFO):
        readers = chestxml_cases(tmp_path, CHESTXML)
    assert list(readers) == ["CHNCXR_0001_0"]
    assert "chestxml: 3 images without a mask are not used (0, 1, 2)" in caplog.text


def test_2d_masks_in_another_tree_are_found_by_name(tmp_path):
    rng = np.random.default_rng(2)
    left, right = _lungs()
    write_2d(tmp_path / "images" / "CXR_png" / "CHNCXR_0001_0.png",
             rng.integers(0, 256, (24, 20), np.uint8))
    write_2d(tmp_path / "labels" / "masks" / "CHNCXR_0001_0_mask.png", left)
    write_2d(tmp_path / "images" / "CXR_png" / "MCUCXR_0003_0.png",
             rng.integers(0, 256, (24, 20), np.uint8))
    write_2d(tmp_path / "labels" / "masks" / "MCUCXR_0003_0.png", right)
    readers = chestxml_cases(tmp_path, CHESTXML)
    assert sorted(readers) == ["CHNCXR_0001_0", "MCUCXR_0003_0"]
    np.testing.assert_array_equal(readers["MCUCXR_0003_0"]().label[0], right == 255)
    # Kvasir the same way.
    image = rng.integers(0, 256, (30, 40, 3), np.uint8)
    mask = np.zeros((30, 40, 3), np.uint8)
    mask[5:20, 10:30] = 255
    write_2d(tmp_path / "kvasir" / "train" / "images" / "p1.jpg", image)
    write_2d(tmp_path / "kvasir" / "annotations" / "masks" / "p1.jpg", mask)
    volume = kvasir_cases(tmp_path / "kvasir", KVASIR)["p1"]()
    assert volume.label[0, 10, 20] == 1 and volume.label[0, 25, 35] == 0


def test_small_objects_removed_as_medsam_does():
    """Per class: a 3-D component of 99 voxels goes, one of 100 stays; then a slice's 2-D
    component of 9 pixels goes, one of 10 stays (counts written out by hand)."""
    assert (MIN_OBJECT_3D, MIN_OBJECT_2D) == (100, 10)
    label = np.zeros((12, 30, 30), np.uint8)
    label[0:11, 0:3, 0:3] = 1            # 99 voxels, 9 per slice: removed
    label[0:10, 10:12, 10:15] = 1        # 100 voxels, 10 per slice: kept
    label[0:9, 20:30, 20:30] = 2         # 900 voxels of class 2 ...
    label[11, 25:28, 0:3] = 2            # ... and a separate 9-voxel piece: removed
    label[0, 20:25, 20:22] = 3           # class 3's 10 voxels beside class 2: removed (3-D)
    got = remove_small_objects(label)
    expected = label.copy()
    expected[0:11, 0:3, 0:3] = 0
    expected[11, 25:28, 0:3] = 0
    expected[0, 20:25, 20:22] = 0
    np.testing.assert_array_equal(got, expected)
    # 2-D: a slice's components under 10 pixels go even when the 3-D object is large.
    thin = np.zeros((10, 20, 20), np.uint8)
    thin[:, 2:12, 2:12] = 1
    thin[4, 15:18, 15:18] = 1            # 9 pixels, on its own in slice 4 and in 3-D
    thin[5, 15:17, 15:20] = 1            # 10 pixels touching it from slice 5: one 19-voxel
    out = remove_small_objects(thin)     # 3-D object (< 100: removed with it)
    assert out[4, 15:18, 15:18].sum() == 0 and out[5, 15:17, 15:20].sum() == 0
    assert (out[:, 2:12, 2:12] == 1).all()
    # A 2-D image (depth 1) loses only the 2-D objects.
    image = np.zeros((1, 10, 10), np.uint8)
    image[0, 0:3, 0:3] = 1
    image[0, 5:7, 5:10] = 1
    out = remove_small_objects(image)
    assert out[0, 0:3, 0:3].sum() == 0 and out[0, 5:7, 5:10].sum() == 10
