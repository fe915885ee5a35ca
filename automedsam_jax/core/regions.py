"""Region metrics the way BraTS scores them: nested regions made of a dataset's classes, each with
DSC, HD95, sensitivity, specificity and NSD per case, and lesion-wise DSC and HD95 as BraTS 2023
defines them (docs/method.md#brats-regions).

Regions
-------
A region is a union of class ids (:data:`REGIONS` of the BraTS presets: whole tumour ``WT`` =
every tumour label, tumour core ``TC`` = necrotic core ∪ enhancing tumour, enhancing tumour
``ET``; the one-class ``brats`` preset has ``WT`` only). Unlike classes (:mod:`.metrics`), a
region absent from both the ground truth and the prediction of a case is *scored* there, as
BraTS does.

Per case and region (:func:`region_metrics`)
--------------------------------------------
* DSC (:func:`.metrics.dice`): both empty → 1, one empty → 0.
* HD95 (:func:`.metrics.hausdorff`, mm with the case's spacing): both empty → 0; one empty →
  :data:`EMPTY_HD95` = 373.13 mm, the diagonal of the 240 × 240 × 155 mm BraTS volume, which the
  BraTS evaluation (CaPTk, BraTS 2017–2021; the BraTS 2023 scripts round it to 374) gives a
  missing or spurious region.
* sensitivity TP / (TP + FN) and specificity TN / (TN + FP) over the whole volume, as GaNDLF /
  BraTS 2023 compute them: sensitivity is 1 when both are empty (0 when only the prediction has
  voxels); specificity of a volume with no negative voxel is 1.
* NSD at τ mm (:func:`.metrics.nsd`): both empty → 1, one empty → 0.

Lesion-wise (:func:`lesion_wise`, BraTS 2023, github.com/rachitsaluja/BraTS-2023-Metrics)
-------------------------------------------------------------------------------------------
The ground truth is dilated (``generate_binary_structure(3, 2)``, :data:`LESION_DILATION` = 3
iterations for gliomas) and its 26-connected components, intersected with the ground truth, are
the lesions (lesions within the dilation of each other count as one). A predicted 26-connected
component belongs to every lesion whose dilated extent it touches; a lesion's DSC and HD95 are
those of the lesion against the union of its components (no component: DSC 0, HD95
:data:`LESION_MISS_HD95` = 374 mm). Lesions of at most :data:`LESION_MIN_VOLUME` = 50 mm³ are
left out; a predicted component that touches no lesion is a false positive scoring 0 / 374 mm.
Lesion-wise DSC = Σ lesion DSC / (lesions + false positives), lesion-wise HD95 = (Σ lesion
HD95 + 374 · false positives) / (lesions + false positives); no lesion and no false positive:
1 and 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from .metrics import DEFAULT_TOLERANCE, dice, hausdorff, surface_scores

__all__ = ["EMPTY_HD95", "LESION_DILATION", "LESION_MIN_VOLUME", "LESION_MISS_HD95",
           "LesionScores", "RegionMetrics", "RegionSummary", "Regions", "lesion_wise",
           "region_metrics", "summarise"]

Regions = tuple[tuple[str, tuple[int, ...]], ...]
"""``((name, class ids), ...)``: each region the union of its classes."""

EMPTY_HD95 = 373.13
LESION_MISS_HD95 = 374.0
LESION_DILATION = 3
LESION_MIN_VOLUME = 50.0
METRICS = ("dsc", "hd95", "sensitivity", "specificity", "nsd")
LESION_METRICS = ("lesion_dsc", "lesion_hd95")


@dataclasses.dataclass(frozen=True)
class LesionScores:
    """Lesion-wise DSC and HD95 of one region in one case, with the counts behind them: lesions
    scored (over :data:`LESION_MIN_VOLUME`), of them found (a component touches them), and
    false-positive components."""

    dsc: float
    hd95: float
    lesions: int
    found: int
    false_positives: int


@dataclasses.dataclass(frozen=True)
class RegionMetrics:
    """One region of one case (see the module docstring); ``lesion_dsc``/``lesion_hd95`` only
    when lesion-wise scores were asked for."""

    dsc: float
    hd95: float
    sensitivity: float
    specificity: float
    nsd: float
    lesion_dsc: float | None = None
    lesion_hd95: float | None = None


def sensitivity_specificity(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Voxel sensitivity and specificity of two binary masks (module docstring conventions)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    tp = int(np.count_nonzero(gt & pred))
    fn = int(np.count_nonzero(gt)) - tp
    fp = int(np.count_nonzero(pred)) - tp
    tn = gt.size - tp - fn - fp
    sensitivity = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    specificity = tn / (tn + fp) if tn + fp else 1.0
    return sensitivity, specificity


def lesion_wise(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                dilation: int = LESION_DILATION, min_volume: float = LESION_MIN_VOLUME,
                miss: float = LESION_MISS_HD95) -> LesionScores:
    """Lesion-wise DSC and HD95 of two binary masks (module docstring), ``spacing`` in array axis
    order (mm), ``min_volume`` in mm³."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    connected = np.ones((3,) * gt.ndim, bool)
    extent = ndimage.binary_dilation(gt, ndimage.generate_binary_structure(gt.ndim, 2),
                                     iterations=dilation) if gt.any() else gt
    # Each component of the dilated ground truth is one lesion's dilated extent (the dilation
    # of a lesion is connected and lies in one component, and every component is the dilation
    # of the ground truth inside it).
    extents, count = ndimage.label(extent, connected)
    components, _ = ndimage.label(pred, connected)
    voxel = float(np.prod(spacing))
    touched: set[int] = set()
    dscs, distances, found = [], [], 0
    for k, box in enumerate(ndimage.find_objects(extents), start=1):
        inside = extents[box] == k
        mine = np.unique(components[box][inside])
        mine = mine[mine != 0]
        touched.update(mine.tolist())
        lesion = gt & (extents == k)
        if np.count_nonzero(lesion) * voxel <= min_volume:
            continue
        matched = np.isin(components, mine) if len(mine) else np.zeros_like(pred)
        distance = hausdorff(lesion, matched, spacing)
        dscs.append(dice(lesion, matched))
        distances.append(miss if math.isinf(distance) else distance)
        found += bool(len(mine))
    false_positives = int(components.max()) - len(touched)
    n = len(dscs) + false_positives
    if n == 0:
        return LesionScores(1.0, 0.0, 0, 0, 0)
    return LesionScores(sum(dscs) / n, (sum(distances) + miss * false_positives) / n,
                        len(dscs), found, false_positives)


def region_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray,
                   spacing: Sequence[float] | None, regions: Regions,
                   tolerance: float = DEFAULT_TOLERANCE, *, lesions: bool = False
                   ) -> dict[str, RegionMetrics]:
    """``{region: RegionMetrics}`` of one case from class-id label maps (``(z, y, x)`` with
    spacing ``(z, y, x)`` mm, or 2D with ``spacing`` None: pixels). ``lesions``: also the
    lesion-wise scores (volumes only)."""
    gt_labels, pred_labels = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(f"shape mismatch: gt {gt_labels.shape} vs pred {pred_labels.shape}")
    if lesions and gt_labels.ndim != 3:
        raise ValueError("lesion-wise scores need 3D volumes")
    out = {}
    for name, ids in regions:
        gt, pred = np.isin(gt_labels, ids), np.isin(pred_labels, ids)
        surface, distance = surface_scores(gt, pred, spacing, tolerance)
        sensitivity, specificity = sensitivity_specificity(gt, pred)
        extra = {}
        if lesions:
            scores = lesion_wise(gt, pred, spacing)
            extra = {"lesion_dsc": scores.dsc, "lesion_hd95": scores.hd95}
        out[name] = RegionMetrics(dice(gt, pred), EMPTY_HD95 if math.isinf(distance) else distance,
                                  sensitivity, specificity, surface, **extra)
    return out


@dataclasses.dataclass(frozen=True)
class RegionSummary:
    """One region over the cases: ``{metric: value}`` for the mean, median and std (population)
    of each metric of :class:`RegionMetrics` that was scored."""

    mean: dict[str, float]
    median: dict[str, float]
    std: dict[str, float]
    cases: int


def summarise(cases: Sequence[Mapping[str, RegionMetrics]]) -> dict[str, RegionSummary]:
    """Each region's :class:`RegionSummary` over the cases that scored it, in region order."""
    by_region: dict[str, list[RegionMetrics]] = {}
    for case in cases:
        for name, m in case.items():
            by_region.setdefault(name, []).append(m)
    out = {}
    for name, ms in by_region.items():
        keys = [k for k in (*METRICS, *LESION_METRICS) if getattr(ms[0], k) is not None]
        values = {k: np.array([getattr(m, k) for m in ms], float) for k in keys}
        out[name] = RegionSummary({k: float(v.mean()) for k, v in values.items()},
                                  {k: float(np.median(v)) for k, v in values.items()},
                                  {k: float(v.std()) for k, v in values.items()}, len(ms))
    return out
