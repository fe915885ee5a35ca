"""Label maps: raw label values → contiguous class ids, the kidney midline split, classes present.

All functions work on label arrays of any spatial shape (original frame, 2D ``(H, W)`` or 3D
``(D, H, W)``); the last axis is the image column.
"""

from __future__ import annotations

import numpy as np

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
