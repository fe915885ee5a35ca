"""The demo's held-out blocks as another scanner and patient would present them: the shifted
evaluation (docs/method.md#shifted-evaluation).

The demo's validation and test blocks are slices of the one training patient (``example_ct``:
122 × 101 px of 3 mm, unenhanced). A clinical abdominal CT differs from it the way this module
renders them, each transform on the Hounsfield volume and its TotalSegmentator label map (so
image and labels move together), seeded per case and drawn from ranges of real scans:

``spacing``   finer pixels and a wider field of view: resampled to 0.7–1.0 mm in-plane and
              padded or cropped to 512 × 512 (a 358–512 mm field of view; cubic for HU, nearest
              for labels), so the organs take another scale in the model's frame.
``contrast``  a portal-venous phase: per-organ HU offsets under the label map, ramping in from
              the organ's edge over :data:`EDGE_MM` (exactly 0 outside it), plus a global window
              / level shift (another site's window or calibration). Offsets: :data:`ENHANCEMENT`.
``kernel``    reconstruction: a smoother (Gaussian, σ 0.4–1.0 mm) or sharper (unsharp mask,
              amount 0.5–1.0 at σ 2 mm) kernel, and scanner noise of 10–25 HU standard
              deviation (slightly correlated, σ 0.5 px), drawn per slice.
``pose``      the patient elsewhere on the table: a rotation of up to ±10° in-plane and a shift
              of up to ±15 mm.
``all``       all four, in the physical order: contrast (the patient), pose, sampling, kernel,
              noise, window.

What it cannot reproduce: the source is 3 mm, so a rendering at 0.7–1.0 mm is an upsampled
3 mm image, not a sharp one — fine texture (vessels inside the liver, bowel wall) and the
partial-volume edges of a thin-slice scan are missing; enhancement is uniform within an organ
(no arterial phase, no lesions, no streaks from dense contrast); slices stay 3 mm apart; the
patient's anatomy is the training patient's. What it does: it moves the intensity, resolution,
scale and position of the organs the way the issue's other-patient scan differs from the demo
(liver 45 → 89 HU, spleen 33 → 79 HU, 512² at 0.98 mm), within the ranges of the sources below.

Sources of the ranges: hepatic enhancement 50–60 HU in the portal-venous phase (Heiken et al.,
Radiology 1995;195:353–357; Bae, Radiology 2010;256:32–61); splenic enhancement like or above the
liver's at that phase (Bae 2010); pancreatic parenchyma ≈ 100–120 HU at the pancreatic/portal
phase against ≈ 40–50 HU unenhanced (Lu et al., Radiology 1996;199:697–701); renal parenchyma
≈ 150–200 HU in the nephrographic phase (Yuh and Cohan, AJR 1999;173:747–755); aorta and portal
vein 150–200 HU (Bae 2010); image noise of abdominal CT 10–25 HU (soft tissue, routine to
low-dose protocols); clinical fields of view 350–500 mm with 512² matrices.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
from scipy import ndimage

KINDS = ("spacing", "contrast", "kernel", "pose")
"""The single shifts, in the order they are applied (after contrast: pose and spacing share
one resampling)."""
SHIFTS: dict[str, tuple[str, ...]] = {**{k: (k,) for k in KINDS}, "all": KINDS}
"""``--dataset demo:shift=NAME`` (several joined by ``+``; ``none`` is the plain block)."""

MATRIX = 512
"""Side of a rendered slice (px) under ``spacing``."""
SPACING_MM = (0.7, 1.0)
"""In-plane pixel spacing range (mm) under ``spacing``."""
EDGE_MM = 4.5
"""The contrast offset ramps from 0 at an organ's edge to its full value this far inside."""
ENHANCEMENT: dict[str, tuple[tuple[int, ...], tuple[float, float]]] = {
    # name: (TotalSegmentator ids, HU offset range over the unenhanced scan)
    "liver": ((5,), (40.0, 60.0)),
    "spleen": ((1,), (50.0, 80.0)),
    "pancreas": ((7,), (40.0, 70.0)),
    "kidneys": ((2, 3), (80.0, 150.0)),
    "arteries and veins": ((52, 63, 64, 65, 66, 67, 68), (100.0, 160.0)),
    "bowel and stomach wall": ((6, 18, 19, 20), (5.0, 20.0)),
    "muscle": ((80, 81, 82, 83, 84, 85, 86, 87, 88, 89), (5.0, 15.0)),
}
"""Portal-venous enhancement per structure of the TotalSegmentator map (module docstring)."""
WINDOW_LEVEL_HU = 15.0
"""Largest shift of the window level (HU) under ``contrast``."""
WINDOW_WIDTH = (0.9, 1.1)
"""Range of the window-width factor under ``contrast``."""
SMOOTH_MM = (0.4, 1.0)
SHARPEN = (0.5, 1.0)
SHARPEN_SIGMA_MM = 2.0
NOISE_HU = (10.0, 25.0)
ROTATION_DEG = 10.0
SHIFT_MM = 15.0
AIR_HU = -1000.0


@dataclasses.dataclass(frozen=True)
class ShiftParams:
    """One case's draw: what :func:`render` does to it."""

    spacing: float | None = None  # output in-plane mm (None: the source's)
    offsets: tuple[tuple[tuple[int, ...], float], ...] = ()  # (TS ids, HU) per structure
    window: tuple[float, float] = (0.0, 1.0)  # level shift (HU), width factor
    smooth_mm: float = 0.0
    sharpen: float = 0.0
    noise_hu: float = 0.0
    rotation_deg: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)


def parse_shifts(text: str) -> tuple[str, ...]:
    """``none+all`` → ``("none", "all")``; an unknown name is a ``ValueError`` listing them."""
    names = tuple(s.strip() for s in text.split("+") if s.strip())
    bad = [n for n in names if n != "none" and n not in SHIFTS]
    if not names or bad or len(set(names)) < len(names):
        raise ValueError(f"shift={text!r}: name distinct shifts joined by '+', each of none, "
                         f"{', '.join(SHIFTS)}")
    return names


def case_rng(seed: int, case_id: str, shift: str) -> np.random.Generator:
    """The generator of one (case, shift): the same draws in every process and run."""
    return np.random.default_rng([seed, zlib.crc32(f"{case_id}/{shift}".encode())])


def draw(kinds: tuple[str, ...], rng: np.random.Generator) -> ShiftParams:
    """One case's parameters for the shifts ``kinds`` (every range is drawn, in a fixed order,
    so a kind's values do not depend on which others are on)."""
    spacing = float(rng.uniform(*SPACING_MM))
    offsets = tuple((ids, float(rng.uniform(*hu))) for ids, hu in ENHANCEMENT.values())
    window = (float(rng.uniform(-WINDOW_LEVEL_HU, WINDOW_LEVEL_HU)),
              float(rng.uniform(*WINDOW_WIDTH)))
    sharp = bool(rng.random() < 0.5)
    smooth_mm, sharpen = float(rng.uniform(*SMOOTH_MM)), float(rng.uniform(*SHARPEN))
    noise = float(rng.uniform(*NOISE_HU))
    rotation = float(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    shift = (float(rng.uniform(-SHIFT_MM, SHIFT_MM)), float(rng.uniform(-SHIFT_MM, SHIFT_MM)))
    p = ShiftParams()
    if "spacing" in kinds:
        p = dataclasses.replace(p, spacing=spacing)
    if "contrast" in kinds:
        p = dataclasses.replace(p, offsets=offsets, window=window)
    if "kernel" in kinds:
        p = dataclasses.replace(p, smooth_mm=0.0 if sharp else smooth_mm,
                                sharpen=sharpen if sharp else 0.0, noise_hu=noise)
    if "pose" in kinds:
        p = dataclasses.replace(p, rotation_deg=rotation, shift_mm=shift)
    return p


def enhance(hu: np.ndarray, seg: np.ndarray, spacing_yx: tuple[float, float],
            offsets) -> np.ndarray:
    """``hu`` ``(H, W)`` with each structure's HU offset added under its label: the full offset
    from :data:`EDGE_MM` inside the structure's edge, ramping to 0 at its edge (the in-plane
    distance to the nearest pixel outside it), nothing outside it."""
    out = np.asarray(hu, np.float32).copy()
    for ids, offset in offsets:
        mask = np.isin(seg, ids)
        if not mask.any():
            continue
        inside = ndimage.distance_transform_edt(mask, sampling=spacing_yx)
        weight = np.clip((inside - 0.5 * min(spacing_yx)) / EDGE_MM, 0.0, 1.0) * mask
        out += np.float32(offset) * weight.astype(np.float32)
    return out


def geometry(shape: tuple[int, int], spacing_yx: tuple[float, float], p: ShiftParams
             ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """The output grid and the map from it to the source: ``(matrix, offset, out_shape,
    out_spacing)`` with source (y, x) = matrix @ output (y, x) + offset (pixels), for
    :func:`scipy.ndimage.affine_transform`. The centres of both grids coincide, up to the
    patient's shift; the rotation is about the centre: a point at ``q`` mm from the source's
    centre lands at ``R⁻¹ (q + shift_mm)`` mm from the output's (``R`` the rotation by
    ``rotation_deg``)."""
    h, w = shape
    sy, sx = spacing_yx
    if p.spacing is None:
        out_shape, out_sp = (h, w), (sy, sx)
    else:
        out_shape, out_sp = (MATRIX, MATRIX), (p.spacing, p.spacing)
    t = np.deg2rad(p.rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    # physical (mm) of output px: diag(out_sp) (o - c_out); source px = diag(1/src_sp)(R phys
    # - shift) + c_src
    matrix = np.diag([1 / sy, 1 / sx]) @ rot @ np.diag(out_sp)
    c_out = (np.asarray(out_shape) - 1) / 2
    c_src = (np.asarray([h, w]) - 1) / 2
    offset = c_src - matrix @ c_out - np.asarray(p.shift_mm) / np.array([sy, sx])
    return matrix, offset, out_shape, float(out_sp[0])


def render_slice(hu: np.ndarray, seg: np.ndarray, spacing_yx: tuple[float, float],
                 p: ShiftParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One axial slice ``(H, W)`` HU and TotalSegmentator ids → the rendered slice (HU float32,
    ids) on the output grid of :func:`geometry`."""
    x = enhance(hu, seg, spacing_yx, p.offsets) if p.offsets else np.asarray(hu, np.float32)
    matrix, offset, shape, out_sp = geometry(hu.shape, spacing_yx, p)
    if not (np.allclose(matrix, np.eye(2)) and np.allclose(offset, 0)):
        x = ndimage.affine_transform(x, matrix, offset, shape, order=3, mode="constant",
                                     cval=AIR_HU)
        seg = ndimage.affine_transform(seg, matrix, offset, shape, order=0, mode="constant",
                                       cval=0)
    if p.smooth_mm:
        x = ndimage.gaussian_filter(x, p.smooth_mm / out_sp)
    if p.sharpen:
        x = x + p.sharpen * (x - ndimage.gaussian_filter(x, SHARPEN_SIGMA_MM / out_sp))
    if p.noise_hu:
        n = ndimage.gaussian_filter(rng.standard_normal(x.shape), 0.5)
        x = x + p.noise_hu * n / n.std()
    level, width = p.window
    if (level, width) != (0.0, 1.0):  # seen through a window at level 40 + dl, width 400 k
        x = (x - 40.0 - level) / width + 40.0
    return x.astype(np.float32), seg


def render_volume(hu: np.ndarray, seg: np.ndarray, spacing: np.ndarray, kinds: tuple[str, ...],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``(D, H, W)`` HU volume and its TotalSegmentator ids (radiological ``(z, y, x)``,
    ``spacing`` (z, y, x) mm) rendered under ``kinds``: one draw of the case's parameters, the
    noise drawn per slice → HU ``(D, H', W')``, ids ``(D, H', W')``, spacing (3,) float32."""
    p = draw(kinds, rng)
    sp = (float(spacing[1]), float(spacing[2]))
    slices = [render_slice(hu[z], seg[z], sp, p, rng) for z in range(hu.shape[0])]
    out_sp = sp if p.spacing is None else (p.spacing, p.spacing)
    return (np.stack([s[0] for s in slices]), np.stack([s[1] for s in slices]),
            np.array([spacing[0], *out_sp], np.float32))
