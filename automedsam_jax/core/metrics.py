"""Segmentation metrics as the paper reports them: DSC and NSD, per class and per dataset
(docs/method.md#metrics).

Definitions
-----------
* **DSC** ``= 2|G∩P| / (|G|+|P|)`` for binary masks of any dimension (:func:`dice`).
* **NSD** (normalised surface Dice) at tolerance τ (default 2, :func:`nsd`): the fraction of the
  surface area of G lying within τ of the surface of P plus that of P within τ of G, over the total
  surface area of both. τ is in **pixels** for 2D images (spacing ``(1, 1)``) and in **millimetres**
  for 3D volumes, with the case's voxel spacing. It is computed exactly as DeepMind's
  ``surface-distance`` 0.1 does (``compute_surface_dice_at_tolerance(compute_surface_distances(
  gt, pred, spacing), tau)``; the tests check agreement to 1e-6): surface elements are the 2×2
  (2D) / 2×2×2 (3D) neighbourhoods that are neither all-in nor all-out, weighted by their contour
  length / marching-cubes surface area for the given spacing; distances are Euclidean distances
  between such elements (``scipy.ndimage.distance_transform_edt(sampling=spacing)``); an element
  counts as overlapping when its distance is ``<= τ``.
* **Challenge convention** (``challenge=True``, off by default): NSD is set to 0 when DSC ≤ 0.2, as
  in the MedSAM-on-laptop challenge evaluation.
* **HD95** (:func:`hausdorff`, ``percentile=95``): the robust Hausdorff distance exactly as
  ``surface_distance.compute_robust_hausdorff(compute_surface_distances(gt, pred, spacing), 95)``
  — what the BraTS 2023+ evaluation calls (github.com/rachitsaluja/BraTS-2023-Metrics): per
  direction, the distance below which 95 % of the surface *area* lies (surface elements sorted
  by distance, cumulative area fraction searched for 0.95), then the larger of the two
  directions. Units of ``spacing`` (mm for volumes). MONAI's ``compute_hausdorff_distance``
  takes the percentile over boundary *voxels* instead; the tests bound the difference.

Axis order and spacing
----------------------
Arrays are ``(z, y, x)`` (3D) or ``(y, x)`` (2D), and ``spacing`` is given **in the array's axis
order**. SimpleITK's ``image.GetSpacing()`` and NIfTI/nibabel's ``header.get_zooms()`` are
``(x, y, z)``: ``sitk.GetArrayFromImage`` returns ``(z, y, x)`` arrays, so reverse the spacing with
:func:`spacing_from_xyz` (``spacing_from_xyz((0.8, 0.8, 3.0)) == (3.0, 0.8, 0.8)``). If you transpose
an array, permute its spacing the same way (``tuple(spacing[i] for i in axes)``).

Empty-mask conventions (differences from ``surface-distance``)
--------------------------------------------------------------
* G and P both empty → DSC = NSD = 1 (nothing to find, nothing found). ``surface-distance``
  returns NaN for both (0/0).
* Exactly one of G, P empty → DSC = NSD = 0. (``surface-distance`` also gives 0 here.) HD95:
  both empty → 0; one empty → ``inf`` from :func:`hausdorff` (as ``surface-distance``); a case's
  per-class score (:func:`case_metrics` with ``hd95=True``) replaces it by the diagonal of the
  case's volume (:func:`volume_diagonal`, the largest distance the volume holds — for a BraTS
  volume, 240 × 240 × 155 mm, that is the 373.13 mm BraTS uses).
* Aggregation (:func:`case_metrics`, :func:`aggregate`): a class absent from **both** the GT and
  the prediction of a case is skipped for that case (not counted as a 1), so trivially-correct
  absences do not inflate the averages; a class present in only one of them counts as 0 (a miss
  or a false positive). Per-class means are over the cases where the class was evaluated; the
  dataset score is the unweighted mean of the per-class means.

Cost: everything is cropped to the union bounding box of G and P (plus a 1-voxel zero margin, all
the surface elements need) before the distance transforms, so a large volume with a small organ
is cheap; :func:`case_metrics` finds all class bounding boxes in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

__all__ = ["ClassMetrics", "ClassSummary", "DatasetMetrics", "SurfaceDistances", "aggregate",
           "case_metrics", "dice", "hausdorff", "nsd", "spacing_from_xyz", "surface_distances",
           "surface_scores", "volume_diagonal"]

DEFAULT_TOLERANCE = 2.0
CHALLENGE_DSC_THRESHOLD = 0.2

# 3D surfel areas, as in surface-distance's lookup_tables.py (Copyright 2018 Google Inc.,
# Apache-2.0): for each 2×2×2 neighbourhood code 0..127 the marching-cubes triangles' area
# vectors at unit spacing, stored as |8·n| per axis, three digits per triangle (only magnitudes
# matter for the area); code c and 255 - c have the same triangles.
_TRIANGLES_3D = """
000 111 111 220220 111 202202 111111 400222111 111 111111 202202 400222111 220220 400222111
400222111 400400 111 022022 111111 040222111 111111 004222111 111111111 111222222111 111111
022022111 202202111 111333022202 111220220 333022111220 400111222111 400111222 111 111111
022022 040111222 111111 111202202 022022111 333022111202 111111 111111111 004222111
222222111111 111220220 400222111111 022333111220 400222111 220220 040222111 040111222 040040
220220111 333202111220 111040222111 040222111 111220220 040222111111 333220111202 040222111
220220220220 220220111 111220220 220220 111 111111 111111 111220220 022022 004222111
022022111 333022111220 111111 111111111 111202202 400222111111 040222111 222222111111
202333022111 400222111 202202 004222111 111202202 202333220111 004222111 004004 111111222004
111222004 202202111 004222111111 202202202202 111202202 202333220111 004222111 111202202
202202 111111 111111111 111022022 040111222111 022022111 004222111111 022022022022 022022111
111111111 111111111111 004222111111 111111111 040222111111 111111111 022022111 111111
400222111 222111222111 333022111202 040222111 333220022111 111222004 111022022 022022
400222111111 111111111 202202111 111111 220220111 111111 111111 111
""".split()
_TRIANGLE_CODE = np.repeat(np.arange(128), [len(entry) // 3 for entry in _TRIANGLES_3D])
_TRIANGLE_NORMAL = np.array([int(d) for d in "".join(_TRIANGLES_3D)], float).reshape(-1, 3) / 8


def spacing_from_xyz(spacing_xyz: Sequence[float]) -> tuple[float, ...]:
    """SimpleITK / NIfTI spacing ``(x, y, z)`` → spacing in numpy array order ``(z, y, x)``."""
    return tuple(float(s) for s in reversed(tuple(spacing_xyz)))


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """DSC of two binary masks of any (equal) shape; 1 if both are empty, 0 if only one is."""
    gt, pred = _as_bool_pair(gt, pred)
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(gt & pred)) / total


def _as_bool_pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt).astype(bool, copy=False), np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
    return gt, pred


def _area_table(spacing: Sequence[float]) -> np.ndarray:
    """Neighbourhood code → contour length (2D, 16 codes) or surfel area (3D, 256 codes) at
    ``spacing``; codes weight the 2^d corners as in surface-distance (first corner = top bit)."""
    if len(spacing) == 2:
        vertical, horizontal = float(spacing[0]), float(spacing[1])
        diag = 0.5 * math.sqrt(vertical ** 2 + horizontal ** 2)
        table = np.zeros(16)
        table[[1, 2, 4, 7, 8, 11, 13, 14]] = diag  # one corner in / one corner out
        table[[3, 12]] = horizontal  # one row in
        table[[5, 10]] = vertical  # one column in
        table[[6, 9]] = 2 * diag  # diagonal pair (two edges)
        return table
    s0, s1, s2 = (float(s) for s in spacing)
    # An area vector (n0, n1, n2) at unit spacing becomes (n0·s1·s2, n1·s0·s2, n2·s0·s1).
    areas = np.linalg.norm(_TRIANGLE_NORMAL * [s1 * s2, s0 * s2, s0 * s1], axis=1)
    half = np.bincount(_TRIANGLE_CODE, weights=areas, minlength=128)
    return np.concatenate([half, half[::-1]])


def _crop_padded(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their union bounding box and zero-padded by one voxel on every side
    (assumes the union is not empty)."""
    union = gt | pred
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(hits[0], hits[-1] + 1))
    box = tuple(box)
    return np.pad(gt[box], 1), np.pad(pred[box], 1)


def _surface(padded: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(surface-element mask over the 2^d neighbourhoods of ``padded``, their areas)."""
    d = padded.ndim
    inner = tuple(s - 1 for s in padded.shape)
    code = np.zeros(inner, np.uint8)
    for bit, offset in enumerate(np.ndindex(*(2,) * d)):
        window = tuple(slice(o, o + n) for o, n in zip(offset, inner))
        code |= padded[window].astype(np.uint8) << np.uint8(2 ** d - 1 - bit)
    border = (code != 0) & (code != 2 ** (2 ** d) - 1)
    return border, table[code]


@dataclass(frozen=True)
class SurfaceDistances:
    """Per surface element of G (resp. P): distance to the other surface and area (2D: length),
    in the units of the spacing. Unsorted (surface-distance sorts them; sums do not care)."""

    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    areas_pred: np.ndarray


def surface_distances(gt: np.ndarray, pred: np.ndarray,
                      spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Surface elements of two 2D/3D masks and their distances to the other mask's surface, as
    ``surface_distance.compute_surface_distances``. Distances are ``inf`` when the other mask is
    empty; arrays are empty for an empty mask. ``spacing`` is in array axis order (default 1s)."""
    gt, pred = _as_bool_pair(gt, pred)
    spacing = _check_spacing(gt.ndim, spacing)
    if not (gt.any() or pred.any()):
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)
    table = _area_table(spacing)
    (border_gt, area_gt), (border_pred, area_pred) = (_surface(m, table)
                                                      for m in _crop_padded(gt, pred))

    def distance_to(border: np.ndarray) -> np.ndarray:
        if not border.any():
            return np.full(border.shape, np.inf)
        return ndimage.distance_transform_edt(~border, sampling=spacing)

    return SurfaceDistances(distance_to(border_pred)[border_gt],
                            distance_to(border_gt)[border_pred],
                            area_gt[border_gt], area_pred[border_pred])


def _check_spacing(ndim: int, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if ndim not in (2, 3):
        raise ValueError(f"NSD needs 2D or 3D masks, got {ndim}D")
    if spacing is None:
        if ndim == 3:
            raise ValueError("3D NSD needs the voxel spacing (z, y, x) in mm; "
                             "use spacing_from_xyz() on SimpleITK/NIfTI (x, y, z) spacing")
        return (1.0, 1.0)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} does not fit a {ndim}D mask")
    return spacing


def surface_scores(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None,
                   tolerance: float = DEFAULT_TOLERANCE, percentile: float = 95.0
                   ) -> tuple[float, float]:
    """``(NSD at tolerance, percentile Hausdorff distance)`` of two 2D/3D binary masks from one
    computation of their surface distances (:func:`nsd`, :func:`hausdorff`; their empty-mask
    conventions: both empty → (1, 0), one empty → (0, inf))."""
    gt, pred = _as_bool_pair(gt, pred)
    spacing = _check_spacing(gt.ndim, spacing)
    has_gt, has_pred = bool(gt.any()), bool(pred.any())
    if not (has_gt or has_pred):
        return 1.0, 0.0
    if not (has_gt and has_pred):
        return 0.0, math.inf
    sd = surface_distances(gt, pred, spacing)
    close = (sd.areas_gt[sd.distances_gt_to_pred <= tolerance].sum()
             + sd.areas_pred[sd.distances_pred_to_gt <= tolerance].sum())
    worst = 0.0
    for distances, areas in ((sd.distances_gt_to_pred, sd.areas_gt),
                             (sd.distances_pred_to_gt, sd.areas_pred)):
        order = np.argsort(distances, kind="stable")
        distances, areas = distances[order], areas[order]
        cumulative = np.cumsum(areas) / np.sum(areas)
        index = min(int(np.searchsorted(cumulative, percentile / 100.0)), len(distances) - 1)
        worst = max(worst, float(distances[index]))
    return float(close / (sd.areas_gt.sum() + sd.areas_pred.sum())), worst


def nsd(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None,
        tolerance: float = DEFAULT_TOLERANCE, *, challenge: bool = False) -> float:
    """Normalised surface Dice of two 2D/3D binary masks at ``tolerance`` (units of ``spacing``).

    ``spacing`` is in array axis order ``(z, y, x)``; it defaults to ``(1, 1)`` for 2D (τ in
    pixels) and is required for 3D (τ in mm). Both empty → 1; one empty → 0. With
    ``challenge=True`` the result is 0 whenever DSC ≤ 0.2."""
    if challenge and dice(gt, pred) <= CHALLENGE_DSC_THRESHOLD:
        return 0.0
    return surface_scores(gt, pred, spacing, tolerance)[0]


def hausdorff(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float] | None = None,
              percentile: float = 95.0) -> float:
    """The ``percentile`` Hausdorff distance of two 2D/3D binary masks (default HD95), in the
    units of ``spacing`` (array axis order; as :func:`nsd`). Both empty → 0; one empty → ``inf``.
    See the module docstring for the definition (surface-distance's)."""
    return surface_scores(gt, pred, spacing, percentile=percentile)[1]


def volume_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The diagonal of a volume of ``shape`` voxels at ``spacing`` (default 1s): the largest
    distance inside it, HD95's value when one mask is empty (BraTS: 240 × 240 × 155 mm →
    373.13 mm)."""
    spacing = (1.0,) * len(shape) if spacing is None else spacing
    return float(np.linalg.norm(np.multiply(shape, spacing)))


@dataclass(frozen=True)
class ClassMetrics:
    """DSC and NSD of one class in one case; HD95 when asked for (None otherwise)."""

    dsc: float
    nsd: float
    hd95: float | None = None


def case_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray,
                 spacing: Sequence[float] | None = None, classes: Iterable[int] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, *, challenge: bool = False,
                 skip_absent: bool = True, hd95: bool = False) -> dict[int, ClassMetrics]:
    """``{class: ClassMetrics}`` of one case from integer label maps (0 = background).

    ``classes`` defaults to every non-zero id in either map; with ``skip_absent`` (default) a
    class absent from both maps is left out, otherwise it scores DSC = NSD = 1 (HD95 0).
    ``spacing`` as in :func:`nsd` (array axis order; required for 3D). ``hd95``: also the HD95,
    a class in only one of the maps scoring the volume's diagonal (:func:`volume_diagonal`)."""
    gt_labels, pred_labels = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(f"shape mismatch: gt {gt_labels.shape} vs pred {pred_labels.shape}")
    if gt_labels.dtype == bool or pred_labels.dtype == bool:
        gt_labels, pred_labels = gt_labels.astype(np.uint8), pred_labels.astype(np.uint8)
    if min(int(gt_labels.min(initial=0)), int(pred_labels.min(initial=0))) < 0:
        raise ValueError("label maps must hold non-negative class ids")
    spacing = _check_spacing(gt_labels.ndim, spacing)
    boxes = [ndimage.find_objects(m) for m in (gt_labels, pred_labels)]
    present = {i + 1 for objs in boxes for i, box in enumerate(objs) if box is not None}
    wanted = sorted(present) if classes is None else sorted({int(c) for c in classes})
    result = {}
    for c in wanted:
        if c <= 0:
            raise ValueError(f"class ids must be >= 1, got {c}")
        found = [objs[c - 1] for objs in boxes if c <= len(objs) and objs[c - 1] is not None]
        if not found:
            if not skip_absent:
                result[c] = ClassMetrics(1.0, 1.0, 0.0 if hd95 else None)
            continue
        box = tuple(slice(min(b[a].start for b in found), max(b[a].stop for b in found))
                    for a in range(gt_labels.ndim))
        gt, pred = gt_labels[box] == c, pred_labels[box] == c
        dsc = dice(gt, pred)
        surface, distance = surface_scores(gt, pred, spacing, tolerance)
        if challenge and dsc <= CHALLENGE_DSC_THRESHOLD:
            surface = 0.0
        if math.isinf(distance):
            distance = volume_diagonal(gt_labels.shape, spacing)
        result[c] = ClassMetrics(dsc, surface, distance if hd95 else None)
    return result


@dataclass(frozen=True)
class ClassSummary:
    """Mean DSC/NSD (and HD95 where scored) of one class over the ``cases`` cases where it was
    evaluated."""

    dsc: float
    nsd: float
    cases: int
    hd95: float | None = None


@dataclass(frozen=True)
class DatasetMetrics:
    """Per-class means and their unweighted mean (``nan`` when no class was evaluated)."""

    dsc: float
    nsd: float
    per_class: dict[int, ClassSummary]

    def to_dict(self) -> dict:
        """Plain nested dicts, ready for ``json.dump`` (class keys become strings there)."""
        return asdict(self)


def aggregate(cases: Iterable[Mapping[int, ClassMetrics]]) -> DatasetMetrics:
    """Average :func:`case_metrics` results per class over the cases that contain the class,
    then over classes."""
    scores: dict[int, list[ClassMetrics]] = {}
    for case in cases:
        for c, m in case.items():
            scores.setdefault(int(c), []).append(m)

    def mean_hd95(ms: list[ClassMetrics]) -> float | None:
        values = [m.hd95 for m in ms if m.hd95 is not None]
        return float(np.mean(values)) if values else None

    per_class = {c: ClassSummary(float(np.mean([m.dsc for m in ms])),
                                 float(np.mean([m.nsd for m in ms])), len(ms), mean_hd95(ms))
                 for c, ms in sorted(scores.items())}
    if not per_class:
        return DatasetMetrics(float("nan"), float("nan"), {})
    return DatasetMetrics(float(np.mean([s.dsc for s in per_class.values()])),
                          float(np.mean([s.nsd for s in per_class.values()])), per_class)
