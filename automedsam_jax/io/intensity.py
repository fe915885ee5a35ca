"""Raw scanner intensities → uint8, as the challenge files store them
(docs/method.md#intensities).

CT: window level 40 / width 400 HU (soft tissue), then linearly to 0..255.
MR: clip to the 0.5–99.5 percentiles of the non-zero voxels, rescale to 0..255, keep zeros at 0
(MedSAM's preprocessing).
"""

from __future__ import annotations

import numpy as np


def ct_window_to_uint8(hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """Hounsfield units (any shape) → uint8: ``[level − width/2, level + width/2]`` → ``[0, 255]``."""
    lo, hi = level - width / 2, level + width / 2
    x = (np.clip(np.asarray(hu, np.float32), lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(x).astype(np.uint8)


def mr_percentile_to_uint8(volume: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """MR intensities (any shape) → uint8 by the percentiles of the non-zero voxels.

    Voxels that are 0 in the input stay 0. A volume with no non-zero voxel is all zeros.
    """
    volume = np.asarray(volume, np.float32)
    foreground = volume[volume != 0]
    if foreground.size == 0:
        return np.zeros(volume.shape, np.uint8)
    lo, hi = np.percentile(foreground, [lower, upper])
    x = np.clip(volume, lo, hi)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-8) * 255.0
    x[volume == 0] = 0
    return np.round(x).astype(np.uint8)
