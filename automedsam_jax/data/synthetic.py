"""Procedural "organ" images: K structures of distinct shape, texture and intensity in a body.

Deterministic from a seed, any size, 2D (``depth = 1``) or 3D. Class ``k`` always has the same
shape family (ellipse, lobed blob, ring, rounded square, crescent, cycling), mean intensity and
texture; position, size and orientation vary per case. In 3D every structure is an ellipsoid-like
body that grows and shrinks along z, so the first and last slices may hold no foreground.
Later classes are drawn over earlier ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .presets import DatasetConfig
from .volume import Volume

_SHAPES = ("ellipse", "blob", "ring", "square", "crescent")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Size of a synthetic dataset: ``num_cases`` cases of ``depth × height × width`` pixels."""

    num_cases: int = 6
    num_classes: int = 3
    height: int = 64
    width: int = 64
    depth: int = 1
    seed: int = 0

    @property
    def name(self) -> str:
        return (f"synthetic_k{self.num_classes}_{self.depth}x{self.height}x{self.width}"
                f"_n{self.num_cases}_s{self.seed}")

    def dataset(self) -> DatasetConfig:
        """The :class:`DatasetConfig` of this synthetic dataset (classes ``structure_1..K``)."""
        return DatasetConfig(name=self.name, source="synthetic", modality="synthetic",
                             ndim=3 if self.depth > 1 else 2,
                             class_names=tuple(f"structure_{k}" for k in range(1, self.num_classes + 1)))


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: np.ndarray, phase: float) -> np.ndarray:
    """Binary mask of one shape family in normalised coordinates ``(u, v)`` (1 = the shape's radius)."""
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if kind == "ellipse":
        return rho <= r
    if kind == "blob":
        return rho <= r * (1 + 0.25 * np.sin(3 * theta + phase))
    if kind == "ring":
        return (rho <= r) & (rho >= 0.55 * r)
    if kind == "square":
        return (np.abs(u) ** 4 + np.abs(v) ** 4) <= r ** 4
    return (rho <= r) & (np.hypot(u - 0.45 * r, v) >= 0.75 * r)  # crescent


def synthetic_case(config: SyntheticConfig, index: int) -> Volume:
    """Case ``index`` (0-based) of the synthetic dataset: a :class:`Volume` (original frame) of ``(D, H, W, 1)``
    uint8 image and ``(D, H, W)`` class ids, spacing (1, 1, 1) mm."""
    rng = np.random.default_rng([config.seed, index])
    d, h, w = config.depth, config.height, config.width
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    # Body: a large bright-ish ellipse on a dark background, with smooth noise.
    body = ((y - h / 2) / (0.46 * h)) ** 2 + ((x - w / 2) / (0.46 * w)) ** 2 <= 1
    image = np.where(body, 70.0, 5.0) + rng.normal(0, 4, size=(d, h, w))
    label = np.zeros((d, h, w), np.uint8)
    side = min(h, w)
    for k in range(1, config.num_classes + 1):
        kind = _SHAPES[(k - 1) % len(_SHAPES)]
        # Centres spread around the body centre at distinct angles, so structures rarely hide
        # each other.
        where = 2 * np.pi * k / config.num_classes + rng.uniform(-0.3, 0.3)
        offset = rng.uniform(0.15, 0.25)
        cy, cx = (0.5 + offset * np.sin(where)) * h, (0.5 + offset * np.cos(where)) * w
        radius = rng.uniform(0.08, 0.13) * side
        angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
        # Along z the structure's radius follows an ellipsoid profile; 2D cases use the middle.
        zc, zr = (d - 1) / 2 + rng.uniform(-0.1, 0.1) * d, max(d * rng.uniform(0.25, 0.4), 0.5)
        profile = np.sqrt(np.clip(1 - ((z - zc) / zr) ** 2, 0, 1)) if d > 1 else np.ones_like(z)
        ca, sa = np.cos(angle), np.sin(angle)
        u = ((x - cx) * ca + (y - cy) * sa) / radius
        v = (-(x - cx) * sa + (y - cy) * ca) / (radius * aspect)
        inside = _shape_mask(kind, u, v, profile, phase=angle) & (profile > 0.15)
        level = 100 + 140 * k / config.num_classes
        texture = 12 * np.sin(2 * np.pi * (x * ca + y * sa) * (0.05 + 0.04 * k) + angle)
        image = np.where(inside, level + texture, image)
        label[inside] = k
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)[..., None]
    return Volume(f"synthetic_{index:04d}", image, label, np.ones(3, np.float32))
