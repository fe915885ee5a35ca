"""Augmentation for scans the model never saw (docs/method.md#augmentation, beyond the paper),
applied to a slice in its original frame before the flips and the frame's preprocessing.

Each training slice has ``variants`` fixed augmented copies besides itself (variant 0, the slice
as stored). Variant v of a slice is a deterministic function of (seed, case, slice, v), so the
embedding cache can embed every variant once and training picks one at random per sample —
exactly the images the online pipeline would make. The operations, in the order applied (each
off at its default unless said; a recipe sets them):

* organ intensity (``organ_offset``): each class's pixels brightened or darkened by its own
  offset, a fraction of the 0–255 range (0.1 = 40 HU for CT windowed at 40/400), ramping in
  from the class's edge over ``organ_edge`` pixels — contrast phases enhance organs unequally
  (domain randomisation by label, as SynthSeg's, on the labels training has).
* intensity: gamma (log-uniform in ``gamma``) and contrast about mid-grey (uniform in
  ``contrast``) on [0, 1] — other windows, scanners and modalities. Brightness alone is omitted:
  every frame min-max normalises.
* geometry: scale s (log-uniform in ``scale``) about the image centre (s < 1 shrinks the anatomy
  and pads with 0: a wider field of view; s > 1 crops), a rotation of up to ``rotation``
  degrees, a shift of up to ``shift`` of the side. Label maps follow with nearest-neighbour
  sampling, so a class may leave the slice (the sample's ``present`` says so).
* reconstruction (``blur`` / ``sharpen``): half the variants a Gaussian blur of σ in ``blur``
  px, the others an unsharp mask of amount in ``sharpen`` (σ = 1 px); only one given: that one.
* noise (``noise``): Gaussian, of a standard deviation uniform in [0, ``noise``] of the range.
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
    rotation: float = 0.0
    """largest in-plane rotation, degrees"""
    organ_offset: tuple[float, float] = (0.0, 0.0)
    """range of each class's own intensity offset, a fraction of the 0-255 range (uniform)"""
    organ_edge: float = 1.5
    """pixels over which a class's offset ramps in from its edge"""
    blur: tuple[float, float] = (0.0, 0.0)
    """Gaussian blur sigma range, pixels (0 0: none)"""
    sharpen: tuple[float, float] = (0.0, 0.0)
    """unsharp-mask amount range at sigma 1 px (0 0: none)"""
    noise: float = 0.0
    """largest Gaussian noise standard deviation, a fraction of the 0-255 range"""

    def __post_init__(self):
        if self.variants < 0:
            raise ValueError(f"--variants must be >= 0, got {self.variants}")
        ordered = all(lo <= hi for lo, hi in (self.scale, self.gamma, self.contrast,
                                               self.organ_offset, self.blur, self.sharpen))
        if not (ordered and self.scale[0] > 0 and self.gamma[0] > 0 and self.contrast[0] >= 0
                and 0 <= self.shift < 1 and self.blur[0] >= 0 and self.sharpen[0] >= 0
                and 0 <= self.rotation <= 180 and self.noise >= 0 and self.organ_edge >= 0):
            raise ValueError(f"augmentation ranges must be ordered low high (scale, gamma > 0; "
                             f"blur, sharpen, noise >= 0; 0 <= shift < 1; 0 <= rotation <= 180), "
                             f"got scale {self.scale}, gamma {self.gamma}, contrast "
                             f"{self.contrast}, shift {self.shift}, rotation {self.rotation}, "
                             f"organ offset {self.organ_offset}, blur {self.blur}, sharpen "
                             f"{self.sharpen}, noise {self.noise}")


def variant_rng(seed: int, case_id: str, slice_index: int, variant: int) -> np.random.Generator:
    """The generator of one (slice, variant): the same draws in every process and run."""
    return np.random.default_rng([seed, zlib.crc32(f"{case_id}/{slice_index}".encode()),
                                  variant])


def organ_offsets(x: np.ndarray, label: np.ndarray, offsets: dict[int, float],
                  edge: float) -> np.ndarray:
    """``x`` ``(H, W)`` on [0, 1] with ``offsets[c]`` added under class c: the full offset from
    ``edge`` pixels inside the class's edge on, ramping to 0 at the edge (the distance to the
    nearest pixel outside it), nothing outside it; clipped to [0, 1]."""
    out = x.astype(np.float32).copy()
    for c, offset in offsets.items():
        mask = label == c
        if not mask.any() or offset == 0:
            continue
        inside = ndimage.distance_transform_edt(mask)
        ramp = np.clip((inside - 0.5) / edge, 0.0, 1.0) if edge > 0 else mask.astype(float)
        out += np.float32(offset) * ramp.astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def augment_slice(image: np.ndarray, label: np.ndarray, cfg: AugmentConfig, seed: int,
                  case_id: str, slice_index: int, variant: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Variant ``variant`` of one slice: image ``(H, W, C)`` uint8 and label ``(H, W)`` class
    ids, original frame, in and out. Variant 0 is the slice itself. The first draws are those of
    the scale, shift, gamma and contrast (so variants made before the other operations existed
    are made again exactly); the others follow."""
    if variant == 0:
        return image, label
    rng = variant_rng(seed, case_id, slice_index, variant)
    s = float(np.exp(rng.uniform(*np.log(cfg.scale))))
    h, w = label.shape
    shift = rng.uniform(-cfg.shift, cfg.shift, 2) * (h, w)
    gamma = float(np.exp(rng.uniform(*np.log(cfg.gamma))))
    contrast = float(rng.uniform(*cfg.contrast))
    theta = np.deg2rad(rng.uniform(-cfg.rotation, cfg.rotation))
    offsets = {c: float(rng.uniform(*cfg.organ_offset)) for c in range(1, int(label.max()) + 1)}
    sharp = bool(rng.random() < 0.5) if cfg.blur[1] and cfg.sharpen[1] else bool(cfg.sharpen[1])
    blur, amount = float(rng.uniform(*cfg.blur)), float(rng.uniform(*cfg.sharpen))
    noise = float(rng.uniform(0.0, cfg.noise))
    # output (y, x) samples input centre + R(out − centre)/s − shift/s
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    if theta:
        matrix = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / s
        offset = centre - matrix @ centre - shift / s
    else:  # the diagonal form, as before rotations existed
        matrix, offset = np.full(2, 1 / s), centre - centre / s - shift / s

    def warp(plane: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(plane, matrix, offset, order=order, mode="constant",
                                        cval=0)

    x = image.astype(np.float32) / 255.0
    if cfg.organ_offset != (0.0, 0.0):
        x = np.stack([organ_offsets(x[..., c], label, offsets, cfg.organ_edge)
                      for c in range(x.shape[-1])], axis=-1)
    x = x ** gamma
    x = np.clip((x - 0.5) * contrast + 0.5, 0.0, 1.0)
    x = np.stack([warp(x[..., c], 1) for c in range(x.shape[-1])], axis=-1)
    if sharp and amount:
        x = x + amount * (x - ndimage.gaussian_filter(x, (1.0, 1.0, 0)))
    elif not sharp and blur:
        x = ndimage.gaussian_filter(x, (blur, blur, 0))
    if noise:
        x = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)
    return np.round(x * 255).astype(np.uint8), warp(label, 0).astype(label.dtype)
