"""Validation during training: the batched evaluator of :mod:`automedsam_jax.evaluation` on a
split (every class of every slice, volumes rebuilt per case, DSC and NSD per class), and a
plain-text summary for the log."""

from __future__ import annotations

from ..data import eval_dataset
from ..evaluation import (ClassSegmenter, Evaluation, calibrate, evaluate_records,
                          presence_scores)
from ..metrics import DEFAULT_TOLERANCE


def evaluate(model, source, num_classes: int, frame, tolerance: float = DEFAULT_TOLERANCE,
             batch_size: int = 4, min_area: float = 0.0) -> Evaluation:
    """→ :class:`automedsam_jax.evaluation.Evaluation` of ``model`` on ``source`` (a split),
    with the presence rule ``min_area``."""
    segmenter = ClassSegmenter(model, range(1, num_classes + 1), batch_size, min_area)
    names = [str(c) for c in range(1, num_classes + 1)]
    return evaluate_records(segmenter, eval_dataset(source, frame), names, tolerance)


def calibrate_presence(model, source, num_classes: int, frame, batch_size: int = 4) -> dict:
    """The presence rule of ``model`` calibrated on ``source`` (the validation split), as stored
    in a model's ``config.json``: ``min_area``, the validation ``accuracy`` and ``pairs``."""
    segmenter = ClassSegmenter(model, range(1, num_classes + 1), batch_size)
    areas, truth = presence_scores(segmenter, eval_dataset(source, frame))
    min_area, accuracy = calibrate(areas, truth)
    return {"min_area": min_area, "accuracy": accuracy, "pairs": int(truth.size),
            "rule": "a class is present on a slice when its mask (p > 0.5) covers at least "
                    "min_area of the image"}


def summary_table(ev: Evaluation, class_names) -> str:
    """Per-class DSC/NSD, their means and the presence precision/recall of an evaluation."""
    metrics, p = ev.metrics, ev.presence
    lines = [f"{'class':<16}{'DSC':>8}{'NSD':>8}{'cases':>7}"]
    for c, s in sorted(metrics.per_class.items()):
        name = class_names[c - 1] if c - 1 < len(class_names) else str(c)
        lines.append(f"{name:<16}{s.dsc:>8.4f}{s.nsd:>8.4f}{s.cases:>7}")
    lines.append(f"{'mean':<16}{metrics.dsc:>8.4f}{metrics.nsd:>8.4f}")
    lines.append(f"presence over {p.pairs} (slice, class) pairs: precision {p.precision:.4f}, "
                 f"recall {p.recall:.4f}, accuracy {p.accuracy:.4f}")
    return "\n".join(lines)
