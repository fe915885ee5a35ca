"""Validation during and after training: the batched evaluator of
:mod:`automedsam_jax.evaluation` on the validation split (every class of every slice, volumes
rebuilt per case, DSC and NSD per class), logged with the evaluator's own table, and the
presence rule calibrated on the same split."""

from __future__ import annotations

from ..core.automedsam import AutoMedSAM
from ..data import eval_dataset
from ..evaluation import (ClassSegmenter, Evaluation, calibrate, evaluate_records, paper_table,
                          presence_scores)


def validate(model: AutoMedSAM, builder, class_names, log, step: int, min_area: float = 0.0,
             batch_size: int = 4) -> Evaluation | None:
    """DSC/NSD and presence of ``model`` on ``builder``'s validation split under the presence
    rule ``min_area``, written to TensorBoard and the log (None without a validation split)."""
    src = builder.as_data_source("validation")
    if len(src) == 0:
        return None
    segmenter = ClassSegmenter(model, range(1, len(class_names) + 1), batch_size, min_area)
    ev = evaluate_records(segmenter, eval_dataset(src, model.config.sam.frame), class_names)
    metrics = ev.metrics
    log.scalars(step, {"dsc": metrics.dsc, "nsd": metrics.nsd,
                       "presence/precision": ev.presence.precision,
                       "presence/recall": ev.presence.recall, **{
        f"dsc/{class_names[c - 1]}": s.dsc for c, s in metrics.per_class.items()}}, "validation")
    log.info(paper_table(ev, f"validation at step {step}"))
    return ev


def calibrate_presence(model: AutoMedSAM, builder, num_classes: int, log, name: str,
                       batch_size: int = 4) -> dict | None:
    """The presence rule of ``model`` calibrated on ``builder``'s validation split, as stored in
    a model's ``config.json``: ``min_area``, the validation ``accuracy`` and ``pairs`` (None
    without a validation split: every class is drawn)."""
    src = builder.as_data_source("validation")
    if len(src) == 0:
        log.info("presence: no validation split to calibrate on; every class is drawn")
        return None
    segmenter = ClassSegmenter(model, range(1, num_classes + 1), batch_size)
    areas, truth = presence_scores(segmenter, eval_dataset(src, model.config.sam.frame))
    min_area, accuracy = calibrate(areas, truth)
    what = ("largest component on the localiser's map" if model.config.localiser
            else "mask (p > 0.5)")
    log.info(f"presence ({name}): a class counts on a slice when its {what} covers ≥ "
             f"{min_area:.2e} of the image; {100 * accuracy:.1f} % of {truth.size} validation "
             "(slice, class) pairs right")
    return {"min_area": min_area, "accuracy": accuracy, "pairs": int(truth.size),
            "rule": f"a class is present on a slice when its {what} covers at least min_area "
                    "of the image"}
