"""Label maps: raw label values → contiguous class ids, the kidney midline split, classes present.

All functions work on label arrays of any spatial shape (original frame, 2D ``(H, W)`` or 3D
``(D, H, W)``); the last axis is the image column.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..io.npz import npz_labels
from .presets import DatasetConfig
from .volume import Volume


def class_volume(case_id: str, image: np.ndarray, raw: np.ndarray, spacing: np.ndarray,
                 config: DatasetConfig) -> Volume:
    """A case of ``config`` from its ``(D, H, W, C)`` uint8 image and raw integer labels
    ``(D, H, W)``: labels checked (:func:`automedsam_jax.io.npz.npz_labels`) and mapped to class
    ids (:func:`to_class_ids`), the kidney split at the body midline where the dataset says.
    Raises ``ValueError`` with the problem, for the caller to name the file."""
    label = to_class_ids(npz_labels(raw), config)
    if config.split_kidney_by_midline:
        label = split_by_midline(label, body_midline(image), config.kidney_class,
                                 config.num_classes)
    return Volume(case_id, image, label, np.asarray(spacing, np.float32))


def to_class_ids(raw: np.ndarray, config: DatasetConfig) -> np.ndarray:
    """Raw integer labels → uint8 class ids ``0..K`` per ``config.label_map``.

    Raises ``ValueError`` naming the unexpected values when a raw value is neither 0 nor mapped
    (unless ``config.other_labels == "background"``, which sends them to 0).
    """
    values = np.unique(raw)
    if config.label_map is None:
        return (raw != 0).astype(np.uint8)
    table = dict(config.label_map)
    unexpected = [int(v) for v in values if v != 0 and int(v) not in table]
    if unexpected and config.other_labels == "error":
        raise ValueError(f"unexpected label values {unexpected[:10]} for dataset {config.name!r} "
                         f"(expected 0 and {sorted(table)})")
    lut = np.zeros(int(values.max()) + 1, np.uint8)
    for raw_value, class_id in table.items():
        if raw_value < lut.size:
            lut[raw_value] = class_id
    return lut[raw]


def body_midline(image: np.ndarray) -> float:
    """Column of the body midline: the mean column of the non-zero pixels of a channels-last uint8
    image or volume ``(..., H, W, C)`` (original frame).

    For windowed CT, air is exactly 0, so these pixels are the body (and the table, which lies
    centred under it)."""
    cols = np.nonzero(image.max(axis=-1))[-1]
    if cols.size == 0:
        raise ValueError("image is all zeros: cannot find the body midline")
    return float(cols.mean())


def split_by_midline(class_ids: np.ndarray, midline: float, paired_class: int,
                     left_class: int) -> np.ndarray:
    """Split a paired organ (e.g. kidney) into the patient's right and left side.

    Pixels of ``paired_class`` in columns left of ``midline`` keep ``paired_class`` (patient's right
    in radiological display); those at or right of it become ``left_class`` (patient's left).
    """
    out = class_ids.copy()
    cols = np.arange(class_ids.shape[-1])
    out[(class_ids == paired_class) & (cols >= midline)] = left_class
    return out


def present_classes(label: np.ndarray) -> np.ndarray:
    """Sorted class ids (> 0) present in a label array, int32."""
    counts = np.bincount(label.ravel())
    return (np.flatnonzero(counts[1:]) + 1).astype(np.int32)


MIN_OBJECT_3D = 100
"""Voxels: a class's 26-connected 3-D component smaller than this is removed (MedSAM's
``pre_CT_MR.py``, ``cc3d.dust(gt, threshold=100, connectivity=26)``)."""
MIN_OBJECT_2D = 10
"""Pixels: then a class's 8-connected component of one slice smaller than this is removed
(``cc3d.dust(gt[z], threshold=10, connectivity=8)``; MedSAM's 2-D preprocessing the same)."""


def _dust(mask: np.ndarray, threshold: int) -> np.ndarray:
    """``mask`` without its fully connected components of fewer than ``threshold`` pixels."""
    components, n = ndimage.label(mask, np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return mask
    small = np.bincount(components.ravel(), minlength=n + 1) < threshold
    small[0] = False
    return mask & ~small[components]


def remove_small_objects(label: np.ndarray) -> np.ndarray:
    """Class ids ``(D, H, W)`` without the small objects MedSAM's preprocessing removes (its
    challenge files were made so): per class, 3-D components under :data:`MIN_OBJECT_3D` voxels
    (a volume, D > 1), then per slice 2-D components under :data:`MIN_OBJECT_2D` pixels."""
    out = label.copy()
    for c in np.unique(label):
        if c == 0:
            continue
        mask = label == c
        if label.shape[0] > 1:
            mask = _dust(mask, MIN_OBJECT_3D)
        mask = np.stack([_dust(m, MIN_OBJECT_2D) for m in mask])
        out[(label == c) & ~mask] = 0
    return out
