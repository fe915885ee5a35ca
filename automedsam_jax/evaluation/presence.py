"""Is this organ on this slice at all? Presence per (slice, class), beyond the paper.

A class prompt always yields a mask, so the decision is made from the mask itself: a class is
present on a slice when its mask (p > 0.5, original frame) covers at least ``min_area`` of the
image (:class:`~automedsam_jax.inference.segmenter.Segmenter`). Measured on the demo, the IoU
head does not separate present from absent classes (it is never trained to), while a model
trained with absent classes as negatives (empty targets) leaves them (nearly) empty, so the
area separates them.

:func:`calibrate` picks ``min_area`` on validation — the threshold with the most (slice, class)
pairs right, in the middle of the widest such interval (geometric middle, areas span orders of
magnitude) — and training stores it in the model's ``config.json`` as ``presence``.
:class:`PresenceCounts` scores the decisions: a class is predicted present on a slice when the
label map holds it there, truly present when the ground truth does.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from ..inference.segmenter import Record, Segmenter, segment_slices


@dataclasses.dataclass(frozen=True)
class PresenceCounts:
    """(slice, class) pairs: true/false positives/negatives of the presence decision."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "PresenceCounts") -> "PresenceCounts":
        return PresenceCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                              self.tn + other.tn)

    @classmethod
    def of_slice(cls, gt: np.ndarray, pred: np.ndarray, class_ids: Iterable[int]
                 ) -> "PresenceCounts":
        """Counts of one slice: ``gt`` and ``pred`` ``(H, W)`` class ids."""
        t = p = tp = 0
        n = 0
        for c in class_ids:
            g, q = bool((gt == c).any()), bool((pred == c).any())
            n += 1
            t += g
            p += q
            tp += g and q
        return cls(tp, p - tp, t - tp, n - t - p + tp)

    @property
    def pairs(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float:
        """Of the pairs predicted present, the fraction truly present (1 when none predicted)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Of the truly present pairs, the fraction predicted present (1 when none present)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.pairs if self.pairs else 1.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "precision": self.precision, "recall": self.recall,
                "accuracy": self.accuracy}


def presence_scores(segmenter: Segmenter, records: Iterable[Record]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Area fractions ``(N, K)`` of every slice's K masks (before any presence rule) and
    whether each class is in the slice's ground truth ``(N, K)`` bool."""
    areas, truth = [], []
    for record, _, area in segment_slices(segmenter, records):
        label = np.asarray(record["label"])
        areas.append(area)
        truth.append([bool((label == c).any()) for c in segmenter.class_ids])
    return np.asarray(areas, np.float64), np.asarray(truth, bool)


def too_few_kinds(truth: np.ndarray) -> str | None:
    """Why presence cannot be calibrated on these (slice, class) pairs — every pair of one kind
    (all present or all absent: any threshold is "right" on them, and "100 % of 1 pair right"
    says nothing) — or None when it can."""
    truth = np.asarray(truth, bool)
    present = int(truth.sum())
    if present not in (0, truth.size):
        return None
    return (f"the {truth.size} validation (slice, class) pair(s) are all "
            f"{'absent' if present == 0 else 'present'}, too few kinds to calibrate a rule on")


def calibrate(areas: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(min_area, accuracy)``: the threshold t with the most pairs right under "present iff
    area ≥ t" — an area of 0 (nothing drawn, nothing found on the map) is never present, as in
    the segmenter — taken in the geometric middle of the widest best interval of t (the
    arithmetic middle when it starts at 0), and that accuracy."""
    a, y = np.asarray(areas, np.float64).ravel(), np.asarray(truth, bool).ravel()
    if a.size == 0:
        raise ValueError("no (slice, class) pairs to calibrate presence on")

    def accuracy(t: float) -> float:
        return float(np.mean(((a >= t) & (a > 0)) == y))

    # Candidate intervals lie between consecutive distinct areas; t in (lo, hi] keeps the same
    # decisions. t = 0 keeps every non-zero area (lo = -inf, hi = smallest area).
    cuts = np.unique(a)
    bounds = np.concatenate([[0.0], cuts, [1.0]])
    best, best_acc, best_width = 0.0, -1.0, -1.0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t = hi if hi > lo else lo
        acc = accuracy(t)
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2
        width = math.log(hi / lo) if lo > 0 else math.inf if hi > 0 else 0.0
        if acc > best_acc or (acc == best_acc and width > best_width):
            best, best_acc, best_width = (mid if hi > lo else lo), acc, width
    return best, accuracy(best)
