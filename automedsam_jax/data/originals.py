"""The paper's four datasets in the layouts their owners publish, read with no conversion step.

A preset with a ``layout`` (:mod:`.presets`) reads its challenge ``.npz`` files when a data
directory holds any, else the original release found below it (:func:`find_layout`; the
builder decides where to look). Every case is read only when the build gets to it, with the
preprocessing the challenge files were made with (docs/method.md#data):

``brats``        BraTS 2021 ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``
                 (labels 1 necrotic core, 2 oedema, 4 enhancing tumour) or BraTS 2023
                 ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (labels
                 1, 2, 3). A case is a ``BraTS*_seg.nii.gz`` / ``BraTS*-seg.nii.gz``, its
                 sequences the files beside it (cases without a label, the challenges'
                 validation sets, are not found). Each sequence: the 0.5–99.5 percentiles of its
                 non-zero voxels → uint8; one channel, or three (``DatasetConfig.sequences``).
``abdomenct1k``  AbdomenCT-1K: images ``Case_00001_0000.nii.gz``, masks ``Case_00001.nii.gz``,
                 anywhere below the folder (``AbdomenCT-1K-ImagePart1/``, ``Mask/``, ...);
                 labels 1 liver, 2 kidney, 3 spleen, 4 pancreas; CT window 40/400 HU → uint8.
``kvasir``       Kvasir-SEG: ``images/<id>.jpg`` with ``masks/<id>.jpg`` (JPEG masks: a pixel
                 brighter than 127 is polyp); RGB as it is.
``chestxml``     Chest X-ray Masks and Labels: ``CXR_png/<id>.png`` with ``masks/<id>_mask.png``
                 (Shenzhen) or ``masks/<id>.png`` (Montgomery), masks 0/255; grey (16-bit greys
                 min–max scaled to uint8) or RGB as it is.

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

import numpy as np

from ..io.errors import BadInputError
from ..io.intensity import ct_window_to_uint8, mr_percentile_to_uint8
from ..io.scans import read_image, read_nifti_volume
from .labels import class_volume
from .presets import DatasetConfig
from .volume import Volume

log = logging.getLogger(__name__)

Reader = Callable[[], Volume]
"""Reads one case when called."""

BRATS_NAMES_2023 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
BRATS_LABELS = {2021: (1, 2, 4), 2023: (1, 2, 3)}
"""Each release's label values: necrotic core, oedema, enhancing tumour."""

LAYOUT_HELP = {
    "brats": "BraTS 2021 (BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz) or 2023 "
             "(BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz)",
    "abdomenct1k": "AbdomenCT-1K (Case_00001_0000.nii.gz images with Case_00001.nii.gz masks)",
    "kvasir": "Kvasir-SEG (images/*.jpg with masks/*.jpg)",
    "chestxml": "Chest X-ray Masks and Labels (CXR_png/*.png with masks/*_mask.png or "
                "masks/*.png)",
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


def _unlabelled(names: Iterable[str], layout: str) -> None:
    names = sorted(names)
    if names:
        log.info("%s: %d images without a mask are not used (%s%s)", layout, len(names),
                 ", ".join(names[:3]), ", ..." if len(names) > 3 else "")


# -- BraTS --------------------------------------------------------------------------------------
def brats_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The BraTS 2021/2023 cases below ``root`` (see the module doc)."""
    found = []
    for seg in sorted(root.rglob("BraTS*seg.nii.gz")):
        stem = seg.name.removesuffix("seg.nii.gz")
        if stem[-1:] in ("_", "-"):
            found.append((stem[:-1], seg))
    return {case_id: functools.partial(read_brats_case, seg, case_id, config)
            for case_id, seg in _unique(found).items()}


def read_brats_case(seg: Path, case_id: str, config: DatasetConfig) -> Volume:
    """One BraTS case (its label file ``<case_id>_seg.nii.gz`` or ``-seg``: 2021 or 2023): the
    sequences ``config.sequences`` as channels, labels mapped to the 2023 values (2021's 4 → 3)
    and then to ``config``'s classes."""
    sep = seg.name[len(case_id)]
    release = 2023 if sep == "-" else 2021
    channels, spacing, first = [], None, None
    for sequence in config.sequences:
        suffix = BRATS_NAMES_2023[sequence] if release == 2023 else sequence
        path = seg.with_name(f"{case_id}{sep}{suffix}.nii.gz")
        if not path.is_file():
            raise BadInputError(path, f"case {case_id}: its {sequence} sequence is missing "
                                      f"(dataset {config.name!r} reads "
                                      f"{' + '.join(config.sequences)}; the folder holds "
                                      f"{', '.join(sorted(p.name for p in seg.parent.glob('*.nii*')))})")
        array, voxel = _volume(path)
        if channels and array.shape != channels[0].shape:
            raise BadInputError(path, f"case {case_id}: shape {array.shape} differs from "
                                      f"{first.name}'s {channels[0].shape}")
        if not channels:
            spacing, first = voxel, path
        channels.append(mr_percentile_to_uint8(array))
    raw, _ = _volume(seg)
    values = set(np.unique(raw).tolist()) - {0}
    unexpected = sorted(values - set(BRATS_LABELS[release]))
    if unexpected:
        raise BadInputError(seg, f"case {case_id}: unexpected label values {unexpected[:10]} for "
                                 f"BraTS {release} (expected 0 and {list(BRATS_LABELS[release])})")
    raw = np.where(raw == 4, 3, raw) if release == 2021 else raw
    return _labelled(case_id, np.stack(channels, axis=-1), raw, spacing, config, seg, first)


# -- AbdomenCT-1K -------------------------------------------------------------------------------
_CASE = re.compile(r"(Case_\d+)(_0000)?\.nii\.gz")


def abdomenct1k_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The AbdomenCT-1K cases below ``root``: every mask, with the image of its case."""
    images, masks = [], []
    for path in sorted(root.rglob("Case_*.nii.gz")):
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
def kvasir_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The Kvasir-SEG images below ``root`` (``images/*.jpg``), each with ``../masks/<name>``."""
    images = _unique((p.stem, p) for p in sorted(root.glob("**/images/*.jpg")))
    return {case_id: functools.partial(read_2d_case, image, image.parent.parent / "masks" /
                                       image.name, case_id, config)
            for case_id, image in images.items()}


def chestxml_cases(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """The X-rays below ``root`` (``CXR_png/*.png``) that have a mask in ``../masks``."""
    cases, unlabelled = {}, []
    for case_id, image in _unique((p.stem, p) for p in sorted(root.glob("**/CXR_png/*.png"))).items():
        masks = image.parent.parent / "masks"
        mask = next((m for m in (masks / f"{case_id}_mask.png", masks / image.name)
                     if m.is_file()), None)
        if mask is None:
            unlabelled.append(case_id)
        else:
            cases[case_id] = functools.partial(read_2d_case, image, mask, case_id, config)
    _unlabelled(unlabelled, "chestxml")
    return cases


def read_2d_case(image: Path, mask: Path, case_id: str, config: DatasetConfig) -> Volume:
    """One 2-D image with its mask: JPEG masks thresholded at 127 (JPEG is lossy), PNG masks
    read as label values (0 and 255, or 0 and 1)."""
    if not mask.is_file():
        raise BadInputError(mask, f"case {case_id}: its mask is missing (image {image})")
    pixels = read_image(image)
    if pixels.dtype != np.uint8:  # 16-bit grey → uint8 by its own range
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = np.round((pixels - lo) / max(hi - lo, 1e-8) * 255).astype(np.uint8)
    labels = read_image(mask)
    labels = labels.max(axis=-1) if labels.ndim == 3 else labels
    if mask.suffix.lower() in (".jpg", ".jpeg"):
        labels = (labels > 127).astype(np.uint8)
    image_4d = (pixels[..., None] if pixels.ndim == 2 else pixels)[None]
    return _labelled(case_id, image_4d, labels[None], np.ones(3, np.float32), config, mask, image)


LAYOUTS: dict[str, Callable[[Path, DatasetConfig], dict[str, Reader]]] = {
    "brats": brats_cases, "abdomenct1k": abdomenct1k_cases, "kvasir": kvasir_cases,
    "chestxml": chestxml_cases}


def find_layout(root: Path, config: DatasetConfig) -> dict[str, Reader]:
    """Case id → reader of the cases of ``config``'s original layout below ``root`` (none: {})."""
    return LAYOUTS[config.layout](root, config) if config.layout and root.is_dir() else {}
