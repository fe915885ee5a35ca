"""Validation during training: the batched evaluator of :mod:`automedsam_jax.evaluation` on a
split (every class of every slice, volumes rebuilt per case, DSC and NSD per class), and a
plain-text summary for the log."""

from __future__ import annotations

from ..data import eval_dataset
from ..evaluation import ClassSegmenter, evaluate_records
from ..metrics import DEFAULT_TOLERANCE, DatasetMetrics


def evaluate(model, source, num_classes: int, frame, tolerance: float = DEFAULT_TOLERANCE,
             batch_size: int = 4) -> DatasetMetrics:
    """→ :class:`automedsam_jax.metrics.DatasetMetrics` of ``model`` on ``source`` (a split)."""
    segmenter = ClassSegmenter(model, range(1, num_classes + 1), batch_size)
    names = [str(c) for c in range(1, num_classes + 1)]
    return evaluate_records(segmenter, eval_dataset(source, frame), names, tolerance).metrics


def summary_table(metrics, class_names) -> str:
    lines = [f"{'class':<16}{'DSC':>8}{'NSD':>8}{'cases':>7}"]
    for c, s in sorted(metrics.per_class.items()):
        name = class_names[c - 1] if c - 1 < len(class_names) else str(c)
        lines.append(f"{name:<16}{s.dsc:>8.4f}{s.nsd:>8.4f}{s.cases:>7}")
    lines.append(f"{'mean':<16}{metrics.dsc:>8.4f}{metrics.nsd:>8.4f}")
    return "\n".join(lines)
