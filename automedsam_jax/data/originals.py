"""The paper's four datasets in the layouts their owners publish, read with no conversion step.

A preset with a ``layout`` (:mod:`.presets`) reads its challenge ``.npz`` files when a data
directory holds any, else the original release found below it (:func:`find_layout`; the
builder decides where to look). Every case is read only when the build gets to it, with the
preprocessing the challenge files were made with (docs/method.md#data):

``brats``        BraTS 2020 ``BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}``
                 and 2021 ``BraTS2021_00000/BraTS2021_00000_{...}`` (labels 1 necrotic core,
                 2 oedema, 4 enhancing tumour), or BraTS 2023/2024
                 ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}`` (labels 1, 2,
                 3; 2024 adds 4, the resection cavity, read with ``classes=subregions+cavity``),
                 each ``.nii.gz`` or ``.nii`` (the Kaggle BraTS 2020 copy). A case is a folder
                 of such files; its segmentation is ``<case>_seg`` / ``-seg``, else the folder's
                 one other ``*seg*`` NIfTI (BraTS 2020's case 355: ``W39_1998.09.19_Segm.nii``).
                 Cases without one (the validation releases) are counted in the log. Each
                 sequence: the 0.5–99.5 percentiles of its non-zero voxels → uint8; one
                 channel, or three (``DatasetConfig.sequences``).
``abdomenct1k``  AbdomenCT-1K: images ``Case_00001_0000.nii.gz``, masks ``Case_00001.nii.gz``
                 (or ``.nii``),
                 anywhere below the folder (``AbdomenCT-1K-ImagePart1/``, ``Mask/``, ...);
                 labels 1 liver, 2 kidney, 3 spleen, 4 pancreas; CT window 40/400 HU → uint8.
``kvasir``       Kvasir-SEG: ``images/<id>.jpg`` with ``masks/<id>.jpg`` (JPEG masks: a pixel
                 brighter than 127 is polyp); RGB as it is.
``chestxml``     Chest X-ray Masks and Labels: ``CXR_png/<id>.png`` with ``masks/<id>_mask.png``
                 (Shenzhen) or ``masks/<id>.png`` (the Kaggle copy), or Montgomery's
                 ``ManualMask/leftMask/<id>.png`` + ``rightMask/<id>.png`` (merged); masks
                 0/255; grey (16-bit greys min–max scaled to uint8) or RGB as it is.

2-D masks kept in another tree than their images (``images/CXR_png/``, ``labels/masks/``) are
found by name below the folder.

Volumes are brought to the radiological ``(z, y, x)`` layout training uses
(:func:`automedsam_jax.io.orientation.to_radiological`) and keep their spacing for NSD; the
builder cuts them into axial slices. Case ids are the original names (``BraTS2021_00000``,
``Case_00001``, the image's stem). Images without a mask (unlabelled AbdomenCT-1K cases, X-rays
without masks) are not cases: they are counted in the log. Every problem of a case — a missing
sequence, image or mask, shapes that differ, a label value the release does not have, an
unreadable file — is a :class:`BadInputError` naming the file and the case, raised when the case
is read, so the builder skips and lists it like a bad ``.npz``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from ..io.errors import BadInputError
from ..io.intensity import ct_window_to_uint8, mr_percentile_to_uint8
from ..io.scans import read_image, read_nifti_volume
from .labels import class_volume
from .presets import BRATS_CAVITY, DatasetConfig
from .volume import Volume

log = logging.getLogger(__name__)

Reader = Callable[[], Volume]
"""Reads one case when called."""

BRATS_NAMES_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
BRATS_LABELS = {2021: (1, 2, 4), 2023: (1, 2, 3)}
"""Each naming's label values: necrotic core, oedema, enhancing tumour (2024 adds 4, the
resection cavity, to the 2023 naming)."""
RELEASE_NAMES = {2021: "2020/2021", 2023: "2023/2024"}

LAYOUT_HELP = {
    "brats": "BraTS 2020/2021 (BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz) "
             "or 2023/2024 (BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}"
             ".nii.gz), .nii or .nii.gz",
    "abdomenct1k": "AbdomenCT-1K (Case_00001_0000.nii.gz images with Case_00001.nii.gz masks)",
    "kvasir": "Kvasir-SEG (images/*.jpg with masks/*.jpg)",
    "chestxml": "Chest X-ray Masks and Labels (CXR_png/*.png with masks/*_mask.png, "
                "masks/*.png or ManualMask/{leftMask,rightMask}/*.png)",
}
"""What each layout looks like, for messages."""


def _volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume as a radiological ``(z, y, x)`` array and its spacing (z, y, x) in mm."""
    _, data, spacing = read_nifti_volume(path)
    if not np.all(np.isfinite(data)):
        raise BadInputError(path, "contains NaN or Inf values")
    return data, spacing


def _labelled(case_id: str, image: np.ndarray, raw: np.ndarray, spacing: np.ndarray,
              config: DatasetConfig, label_path: Path, image_path: Path) -> Volume:
    """:func:`.labels.class_volume`, its problems named by the label file and the case."""
    if raw.shape != image.shape[:3]:
        raise BadInputError(label_path, f"case {case_id}: label shape {raw.shape} does not match "
                                        f"the image's {image.shape[:3]} ({image_path.name})")
    try:
        return class_volume(case_id, image, raw, spacing, config)
    except ValueError as e:
        raise BadInputError(label_path, f"case {case_id}: {e}") from e


def _unique(found: Iterable[tuple[str, Path]]) -> dict[str, Path]:
    """Case id → file, the first of each id (a second copy elsewhere is logged and not used)."""
    out: dict[str, Path] = {}
    for case_id, path in found:
        if case_id in out:
            log.warning("case %s is also at %s; using %s", case_id, path, out[case_id])
        else:
            out[case_id] = path
    return out


def _unlabelled(names: Iterable[str], layout: str, what: str = "images without a mask") -> None:
    """The one line saying how many unlabelled cases a layout holds (not used)."""
    names = sorted(names)
    if names:
        log.info("%s: %d %s are not used (%s%s)", layout, len(names), what,
                 ", ".join(names[:3]), ", ..." if len(names) > 3 else "")


# -- BraTS --------------------------------------------------------------------------------------
_BRATS_FILE = re.compile(r"(BraTS.+?)([_-])(flair|t1ce|t1|t2|t2f|t1n|t1c|t2w|seg)\.nii(\.gz)?")


def brats_case_folders(root: Path) -> dict[str, Path]:
    """Case id → folder of every BraTS case below ``root`` (``root`` itself may be one), labelled
    or not: the folders holding files named as a release names them."""
    folders: dict[tuple[str, Path], None] = {}  # (case id, folder), in order, once each
    for path in sorted(root.rglob("BraTS*.nii*")):
        if m := _BRATS_FILE.fullmatch(path.name):
            folders.setdefault((m[1], path.parent), None)
    return _unique(folders)


def brats_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The labelled BraTS 2020/2021/2023/2024 cases below ``root`` (see the module doc); the
    unlabelled ones (validation releases) are counted in the log."""
    cases, unlabelled = [], []
    for case_id, folder in brats_case_folders(root).items():
        seg = brats_label_file(folder, case_id)
        if seg is None:
            unlabelled.append(case_id)
        else:
            cases.append((case_id, seg))
    _unlabelled(unlabelled, "brats", "cases without a segmentation")
    return {case_id: functools.partial(read_brats_case, seg, case_id, config)
            for case_id, seg in cases}


def brats_label_file(folder: Path, case_id: str) -> Path | None:
    """A case's segmentation: ``<case_id>_seg`` / ``-seg`` ``.nii(.gz)``, else the one other
    ``*seg*`` NIfTI of its folder (BraTS 2020's case 355 ships ``W39_1998.09.19_Segm.nii``);
    None when there is none."""
    for sep in "_-":
        for ext in (".nii.gz", ".nii"):
            if (path := folder / f"{case_id}{sep}seg{ext}").is_file():
                return path
    others = [p for p in sorted(folder.glob("*.nii*")) if "seg" in p.name.lower()
              and not _BRATS_FILE.fullmatch(p.name)]
    return others[0] if len(others) == 1 else None


def brats_sequence_file(folder: Path, case_id: str, sequence: str, release: int) -> Path | None:
    """The file of ``sequence`` (2021 name) of a case: its release's name, ``.nii.gz`` or
    ``.nii``; None when missing."""
    sep, name = ("-", BRATS_NAMES_2023[sequence]) if release == 2023 else ("_", sequence)
    for ext in (".nii.gz", ".nii"):
        if (path := folder / f"{case_id}{sep}{name}{ext}").is_file():
            return path
    return None


def brats_release(case_id: str) -> int:
    """2023 for the 2023/2024 naming (``BraTS-GLI-00000-000``: labels 1, 2, 3 and 2024's 4),
    2021 for the 2020/2021 naming (``BraTS2021_00000``, ``BraTS20_Training_001``: 1, 2, 4)."""
    return 2023 if case_id.startswith("BraTS-") else 2021


def read_brats_sequences(folder: Path, case_id: str, config: DatasetConfig
                         ) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """The sequences ``config.sequences`` of a case as ``(D, H, W, C)`` uint8 channels (each
    through :func:`~automedsam_jax.io.intensity.mr_percentile_to_uint8`), radiological, with the
    first sequence's NIfTI image (the case's geometry) and spacing (z, y, x) mm."""
    release = brats_release(case_id)
    channels, spacing, first = [], None, None
    for sequence in config.sequences:
        path = brats_sequence_file(folder, case_id, sequence, release)
        if path is None:
            wanted = (f"{case_id}-{BRATS_NAMES_2023[sequence]}" if release == 2023
                      else f"{case_id}_{sequence}")
            raise BadInputError(folder / f"{wanted}.nii.gz",
                                f"case {case_id}: its {sequence} sequence is missing "
                                f"(dataset {config.name!r} reads "
                                f"{' + '.join(config.sequences)}; the folder holds "
                                f"{', '.join(sorted(p.name for p in folder.glob('*.nii*')))})")
        nifti, array, voxel = read_nifti_volume(path)
        if not np.all(np.isfinite(array)):
            raise BadInputError(path, "contains NaN or Inf values")
        if channels and array.shape != channels[0].shape:
            raise BadInputError(path, f"case {case_id}: shape {array.shape} differs from "
                                      f"{first[1].name}'s {channels[0].shape}")
        if not channels:
            spacing, first = voxel, (nifti, path)
        channels.append(mr_percentile_to_uint8(array))
    return first[0], np.stack(channels, axis=-1), spacing


def read_brats_case(seg: Path, case_id: str, config: DatasetConfig) -> Volume:
    """One BraTS case (its label file ``seg``): the sequences ``config.sequences`` as channels
    (:func:`read_brats_sequences`), labels mapped to the 2023 values (2021's 4 → 3) and then to
    ``config``'s classes. Label 4 of the 2023 naming (BraTS 2024's resection cavity) needs
    ``classes=subregions+cavity``."""
    release = brats_release(case_id)
    nifti, image, spacing = read_brats_sequences(seg.parent, case_id, config)
    raw, _ = _volume(seg)
    values = set(np.unique(raw).tolist()) - {0}
    cavity = BRATS_CAVITY in config.class_names
    expected = BRATS_LABELS[release] + ((4,) if release == 2023 and cavity else ())
    unexpected = sorted(values - set(expected))
    if unexpected == [4] and release == 2023:
        raise BadInputError(seg, f"case {case_id}: label 4 (BraTS 2024's resection cavity) is "
                                 f"not a class of dataset {config.name!r}: pass --dataset "
                                 "brats:classes=subregions+cavity to read it")
    if unexpected:
        raise BadInputError(seg, f"case {case_id}: unexpected label values {unexpected[:10]} for "
                                 f"the BraTS {RELEASE_NAMES[release]} naming (expected 0 and "
                                 f"{list(expected)})")
    raw = np.where(raw == 4, 3, raw) if release == 2021 else raw
    return _labelled(case_id, image, raw, spacing, config, seg, Path(nifti.get_filename()))


def brats_release_labels(labels: np.ndarray, config: DatasetConfig, case_id: str) -> np.ndarray:
    """Class ids of ``config`` → the label values of the case's release, as a submission holds
    them: the subregions as 1 / 2 / 4 (2020/2021 naming) or 1 / 2 / 3 (2023/2024), the cavity as
    4; the one-class whole tumour as 2, so that it counts in WT only (it says nothing of TC
    or ET)."""
    if config.label_map is None:
        return np.where(labels > 0, 2, 0).astype(np.uint8)
    values = BRATS_LABELS[brats_release(case_id)] + (4,)
    lut = np.array((0, *values[:config.num_classes]), np.uint8)
    return lut[labels]


# -- AbdomenCT-1K -------------------------------------------------------------------------------
_CASE = re.compile(r"(Case_\d+)(_0000)?\.nii(\.gz)?")


def abdomenct1k_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The AbdomenCT-1K cases below ``root``: every mask, with the image of its case."""
    images, masks = [], []
    for path in sorted(root.rglob("Case_*.nii*")):
        if m := _CASE.fullmatch(path.name):
            (images if m[2] else masks).append((m[1], path))
    images, masks = _unique(images), _unique(masks)
    _unlabelled(images.keys() - masks.keys(), "abdomenct1k")
    return {case_id: functools.partial(read_ct_case, images.get(case_id), mask, case_id, config)
            for case_id, mask in masks.items()}


def read_ct_case(image: Path | None, mask: Path, case_id: str, config: DatasetConfig) -> Volume:
    """One CT case: windowed at 40/400 HU, labels per ``config``."""
    if image is None:
        raise BadInputError(mask, f"case {case_id}: no image {case_id}_0000.nii.gz found for "
                                  "this mask")
    hu, spacing = _volume(image)
    raw, _ = _volume(mask)
    return _labelled(case_id, ct_window_to_uint8(hu)[..., None], raw, spacing, config, mask,
                     image)


# -- 2-D images ---------------------------------------------------------------------------------
def _masks_by_name(root: Path, pattern: str) -> dict[str, list[Path]]:
    """Every mask file below ``root`` matching ``pattern``, by its image's stem (a ``_mask``
    suffix dropped): how masks kept in another tree than their images are found."""
    out: dict[str, list[Path]] = {}
    for path in sorted(root.glob(pattern)):
        out.setdefault(path.stem.removesuffix("_mask"), []).append(path)
    return out


def kvasir_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The Kvasir-SEG images below ``root`` (``images/*.jpg``), each with ``../masks/<name>``,
    else the mask of the same name in any ``masks/`` folder below ``root``."""
    images = _unique((p.stem, p) for p in sorted(root.glob("**/images/*.jpg")))
    elsewhere = _masks_by_name(root, "**/masks/*.jpg")
    cases = {}
    for case_id, image in images.items():
        beside = image.parent.parent / "masks" / image.name
        masks = (beside,) if beside.is_file() else tuple(elsewhere.get(case_id, [beside])[:1])
        cases[case_id] = functools.partial(read_2d_case, image, masks, case_id, config)
    return cases


CHEST_TEST_FOLDER = "test"
"""The Kaggle copy's folder of X-rays without masks."""


def chestxml_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The X-rays below ``root`` (``CXR_png/*.png``) that have a mask: ``../masks/<id>_mask.png``
    (Shenzhen) or ``../masks/<id>.png`` (the Kaggle copy), Montgomery's ``ManualMask/leftMask``
    and ``rightMask`` (merged), or a mask of that name anywhere below ``root``. The rest, and
    the images of the Kaggle copy's ``test/`` folder, are counted in the log."""
    masks = _masks_by_name(root, "**/masks/*.png")
    for side in ("leftMask", "rightMask"):
        for stem, paths in _masks_by_name(root, f"**/ManualMask/{side}/*.png").items():
            masks.setdefault(stem, []).extend(paths)
    cases, unlabelled = {}, []
    for case_id, image in _unique((p.stem, p) for p in sorted(root.glob("**/CXR_png/*.png"))).items():
        beside = [m for m in (image.parent.parent / "masks" / f"{case_id}_mask.png",
                              image.parent.parent / "masks" / image.name) if m.is_file()]
        found = beside[:1] or masks.get(case_id, [])
        if found:
            cases[case_id] = functools.partial(read_2d_case, image, tuple(found), case_id, config)
        else:
            unlabelled.append(case_id)
    unlabelled += [p.stem for p in sorted(root.glob(f"**/{CHEST_TEST_FOLDER}/*.png"))
                   if p.stem not in cases]
    _unlabelled(unlabelled, "chestxml")
    return cases


def read_2d_case(image: Path, masks: tuple[Path, ...], case_id: str, config: DatasetConfig
                 ) -> Volume:
    """One 2-D image with its mask (several masks, as Montgomery's left and right lungs, are
    merged): JPEG masks thresholded at 127 (JPEG is lossy), PNG masks read as label values (0 and
    255, or 0 and 1)."""
    for mask in masks:
        if not mask.is_file():
            raise BadInputError(mask, f"case {case_id}: its mask is missing (image {image})")
    pixels = read_image(image)
    if pixels.dtype != np.uint8:  # 16-bit grey → uint8 by its own range
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = np.round((pixels - lo) / max(hi - lo, 1e-8) * 255).astype(np.uint8)
    labels = None
    for mask in masks:
        one = read_image(mask)
        one = one.max(axis=-1) if one.ndim == 3 else one
        if mask.suffix.lower() in (".jpg", ".jpeg"):
            one = (one > 127).astype(np.uint8)
        if labels is not None and one.shape != labels.shape:
            raise BadInputError(mask, f"case {case_id}: mask shape {one.shape} differs from "
                                      f"{masks[0].name}'s {labels.shape}")
        labels = one if labels is None else np.maximum(labels, one)
    image_4d = (pixels[..., None] if pixels.ndim == 2 else pixels)[None]
    return _labelled(case_id, image_4d, labels[None], np.ones(3, np.float32), config, masks[0],
                     image)


LAYOUTS: dict[str, Callable[[Path, DatasetConfig], dict[str, Reader]]] = {
    "brats": brats_cases, "abdomenct1k": abdomenct1k_cases, "kvasir": kvasir_cases,
    "chestxml": chestxml_cases}


def find_layout(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """Case id → reader of the cases of ``config``'s original layout below ``root`` (none: {})."""
    return LAYOUTS[config.layout](root, config) if config.layout and root.is_dir() else {}
