"""Score a segmenter on a split: every slice, volumes rebuilt per case, DSC and NSD per class
(HD95 when asked), and the dataset's regions (BraTS WT / TC / ET) when it declares any.

Metrics are those of :mod:`automedsam_jax.core.metrics` (docs/method.md#metrics): per case and class
on the whole volume (NSD at τ mm with the case's spacing) or 2D image (τ pixels); a class absent
from both the GT and the prediction of a case is skipped there; per-class means over cases, then the
unweighted mean over classes. Regions (:mod:`automedsam_jax.core.regions`) are scored in every
case, summarised by mean, median and std over cases. Presence decisions are counted over every
(slice, class) pair (:class:`~.presence.PresenceCounts`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence


from ..core.metrics import DEFAULT_TOLERANCE, ClassMetrics, DatasetMetrics, aggregate, case_metrics
from ..core.regions import RegionMetrics, Regions, RegionSummary, region_metrics, summarise
from ..inference.postprocess_3d import postprocess_case
from ..inference.segmenter import Record, Segmenter, segment_slices
from .presence import PresenceCounts
from .volumes import Case, VolumeAssembler

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """Scores of one case: ``{class id: ClassMetrics}`` for the classes evaluated there, and
    ``{region: RegionMetrics}`` for the dataset's regions."""

    case_id: str
    num_slices: int
    spacing: tuple[float, float, float] | None
    complete: bool
    scores: dict[int, ClassMetrics]
    regions: dict[str, RegionMetrics] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Everything a report needs: class names (id ``i + 1`` at index ``i``), per-case scores,
    the dataset summary, the NSD settings, the presence counts over (slice, class) pairs, the
    segmenter's ``min_area``, how long segmentation and scoring took, and the regions' summaries
    (with their definitions, ``((name, class ids), ...)``)."""

    class_names: tuple[str, ...]
    cases: tuple[CaseResult, ...]
    metrics: DatasetMetrics
    tolerance: float
    challenge_nsd: bool
    num_slices: int
    seconds: float
    presence: PresenceCounts = PresenceCounts()
    min_area: float = 0.0
    regions: dict[str, RegionSummary] = dataclasses.field(default_factory=dict)
    region_classes: Regions = ()


def evaluate_records(segmenter: Segmenter, records: Iterable[Record],
                     class_names: Sequence[str], tolerance: float = DEFAULT_TOLERANCE,
                     challenge_nsd: bool = False, postprocess: bool = False, *,
                     hd95: bool = False, regions: Regions = (), lesions: bool = False
                     ) -> Evaluation:
    """Segment every record (see :func:`segment_slices`) and score each case as soon as it is
    complete (memory: the slices of unfinished cases only). ``postprocess``: each case's labels
    go through :func:`~automedsam_jax.inference.postprocess_3d.postprocess_case` first
    (presence is counted after it). ``hd95``: the classes' HD95 too; ``regions``: score these
    unions of classes (:func:`automedsam_jax.core.regions.region_metrics`), with lesion-wise
    scores if ``lesions``."""
    classes = range(1, len(class_names) + 1)
    assembler, results, slices = VolumeAssembler(), [], 0
    presence = PresenceCounts()
    start = time.perf_counter()

    def score(case: Case) -> CaseResult:
        nonlocal presence
        pred = postprocess_case(case.pred, classes) if postprocess else case.pred
        for gt_z, pred_z in zip(*((case.gt, pred) if case.gt.ndim == 3 else
                                  ([case.gt], [pred]))):
            presence += PresenceCounts.of_slice(gt_z, pred_z, classes)
        return CaseResult(case.case_id, case.num_slices, case.spacing, case.complete,
                          case_metrics(case.gt, pred, case.spacing, classes, tolerance,
                                       challenge=challenge_nsd, hd95=hd95),
                          region_metrics(case.gt, pred, case.spacing, regions, tolerance,
                                         lesions=lesions))

    for record, pred, _ in segment_slices(segmenter, records):
        slices += 1
        case = assembler.add(record, pred)
        if case is not None:
            results.append(score(case))
    for case in assembler.finish():
        log.warning("case %s: only %d slices present; scored as a stack of those",
                    case.case_id, case.num_slices)
        results.append(score(case))
    return Evaluation(tuple(class_names), tuple(results), aggregate(r.scores for r in results),
                      tolerance, challenge_nsd, slices, time.perf_counter() - start, presence,
                      segmenter.min_area, summarise([r.regions for r in results]), tuple(regions))
