"""The in-memory case every source produces before it is cut into slices."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Volume:
    """One case in the original frame.

    case_id: unique name (the npz file stem for challenge files).
    image:   ``(D, H, W, C)`` uint8, ``C`` = 1 (grey) or 3 (RGB); a 2D image has ``D = 1``.
    label:   ``(D, H, W)`` uint8 class ids ``0..K``.
    spacing: ``(3,)`` float32 voxel size in mm as (z, y, x), the array axis order; ``(1, 1, 1)``
             for 2D images (their NSD tolerance is in pixels).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: np.ndarray

    def __post_init__(self):
        if self.image.ndim != 4 or self.image.shape[:3] != self.label.shape:
            raise ValueError(f"{self.case_id}: image {self.image.shape} does not match "
                             f"label {self.label.shape} as (D, H, W, C) / (D, H, W)")
