"""Volumes as volumes (beyond the paper; ``--postprocess 3d`` of evaluation and ``predict``): 3-D
post-processing of a case's slice-wise labels.

Per class c of a ``(D, H, W)`` label volume (z first, original frame):

1. presence smoothed along z — slice z keeps c only when c is on at least two of the slices
   z − 1, z, z + 1 (a median over three; outside the volume counts as absent), so a class found
   on one slice alone, or at the end of its range without a neighbour, is dropped there;
2. the largest 3-D connected component (face-connected, ``scipy.ndimage.label``'s default) of
   what is left; the other components are dropped.

Dropped pixels become background. A 2-D image ``(H, W)`` gets step 2 only, in 2-D.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def smooth_presence(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Step 1 on a ``(D, H, W)`` volume: a copy where class c stays on slice z only if c is on
    at least two of slices z − 1, z, z + 1."""
    out = np.array(labels, copy=True)
    for c in classes:
        on = (labels == c).any(axis=(1, 2))
        padded = np.concatenate([[False], on, [False]])
        keep = padded[:-2].astype(int) + padded[1:-1] + padded[2:] >= 2
        out[~keep[:, None, None] & (labels == c)] = 0
    return out


def largest_components(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Step 2: a copy where each class keeps its largest connected component (ties: the first
    in scan order)."""
    out = np.array(labels, copy=True)
    for c in classes:
        comps, n = ndimage.label(labels == c)
        if n > 1:
            largest = 1 + int(np.argmax(np.bincount(comps.ravel())[1:]))
            out[(comps != largest) & (comps > 0)] = 0
    return out


def postprocess_case(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Steps 1 and 2 on a ``(D, H, W)`` volume, step 2 alone on an ``(H, W)`` image."""
    classes = list(classes)
    if labels.ndim == 3:
        labels = smooth_presence(labels, classes)
    return largest_components(labels, classes)
