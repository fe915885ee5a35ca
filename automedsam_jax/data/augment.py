"""Augmentation for scans the model never saw (docs/method.md#augmentation, beyond the paper):
scale, shift and
intensity, applied to a slice in its original frame before the flips and the frame's
preprocessing.

Each training slice has ``variants`` fixed augmented copies besides itself (variant 0, the slice
as stored). Variant v of a slice is a deterministic function of (seed, case, slice, v), so the
embedding cache can embed every variant once and training picks one at random per sample —
exactly the images the online pipeline would make.

* scale s (log-uniform in ``scale``): the content zoomed about the image centre; s < 1 shrinks
  the anatomy and pads with 0 (a larger field of view, as a 512² scan of 0.98 mm against the
  demo's 122×101 of 3 mm), s > 1 crops. Label maps follow with nearest-neighbour sampling, so a
  class may leave the slice (the sample's ``present`` says so).
* shift: up to ``shift`` of the side in each direction.
* intensity: gamma (log-uniform in ``gamma``) and contrast about mid-grey (uniform in
  ``contrast``) on [0, 1], back to uint8 — other windows, scanners and modalities. Brightness
  alone is omitted: every frame min-max normalises.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmented variants of each training slice (beyond the paper; the module docstring)."""

    variants: int = 0
    """augmented variants per training slice, one drawn per sample (0: none, the paper)"""
    scale: tuple[float, float] = (0.6, 1.25)
    """zoom range about the image centre (log-uniform; < 1 shrinks and pads with 0)"""
    shift: float = 0.08
    """largest shift, a fraction of the side in each direction"""
    gamma: tuple[float, float] = (0.7, 1.5)
    """gamma range on [0, 1] intensities (log-uniform)"""
    contrast: tuple[float, float] = (0.75, 1.3)
    """contrast range about mid-grey (uniform)"""

    def __post_init__(self):
        if self.variants < 0:
            raise ValueError(f"--variants must be >= 0, got {self.variants}")
        if not (0 < self.scale[0] <= self.scale[1] and 0 < self.gamma[0] <= self.gamma[1]
                and 0 <= self.contrast[0] <= self.contrast[1] and 0 <= self.shift < 1):
            raise ValueError(f"augmentation ranges must be ordered low high (scale, gamma > 0; "
                             f"0 <= shift < 1), got scale {self.scale}, gamma {self.gamma}, "
                             f"contrast {self.contrast}, shift {self.shift}")


def variant_rng(seed: int, case_id: str, slice_index: int, variant: int) -> np.random.Generator:
    """The generator of one (slice, variant): the same draws in every process and run."""
    return np.random.default_rng([seed, zlib.crc32(f"{case_id}/{slice_index}".encode()),
                                  variant])


def augment_slice(image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, seed: int,
                  case_id: str, slice_index: int, variant: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Variant ``variant`` of one slice: image ``(H, W, C)`` uint8 and label ``(H, W)`` class
    ids, original frame, in and out. Variant 0 is the slice itself."""
    if variant == 0:
        return image, label
    rng = variant_rng(seed, case_id, slice_index, variant)
    s = float(np.exp(rng.uniform(*np.log(cfg.scale))))
    h, w = label.shape
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * (h, w)
    gamma = float(np.exp(rng.uniform(*np.log(cfg.gamma))))
    contrast = float(rng.uniform(*cfg.contrast))
    # output (y, x) samples input centre + (out − centre)/s − shift
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = centre - centre / s - shift / s

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(plane, np.full(2, 1 / s), offset, order=order,
                                        mode="constant", cval=0)

    x = (image.astype(np.float32) / 255.0) ** gamma
    x = np.clip((x - 0.5) * contrast + 0.5, 0.0, 1.0)
    x = np.stack([warp(x[..., c], 1) for c in range(x.shape[-1])], axis=-1)
    return np.round(x * 255).astype(np.uint8), warp(label, 0).astype(label.dtype)
