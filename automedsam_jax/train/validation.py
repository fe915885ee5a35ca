"""Validation during and after training: the batched evaluator of
:mod:`automedsam_jax.evaluation` on the validation split (every class of every slice, volumes
rebuilt per case, DSC and NSD per class), logged with the evaluator's own table, and the
presence rule calibrated on the same split.

The image encoder is frozen, so a split's embeddings are the same at every validation point:
:class:`ValidationSplit` computes them once (up to :data:`MAX_EMBEDDED` slices; a larger split is
embedded again at each point) and every later pass runs only the prompt route and decoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..core.automedsam import AutoMedSAM
from ..core.routes import route_of
from ..data import eval_dataset
from ..evaluation import (Evaluation, calibrate, evaluate_records, paper_table, presence_scores,
                          too_few_kinds)
from ..inference import Segmenter
from ..inference.options import InferenceConfig

MAX_EMBEDDED = 256
"""Validation slices whose embeddings are kept in memory (4 MiB each at 64 × 64 × 256)."""


class ValidationSplit:
    """A dataset's validation split as evaluation records, with their embeddings attached once
    the first model has embedded them (small splits, :data:`MAX_EMBEDDED`)."""

    def __init__(self, builder, frame, batch_size: int = InferenceConfig.batch_size):
        self.source = builder.as_data_source("validation")
        self.frame, self.batch_size = frame, batch_size
        self._embedded: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def records(self, model: AutoMedSAM) -> Iterable[dict]:
        """Every validation record, with ``embedding`` when the split is small enough."""
        if len(self.source) > MAX_EMBEDDED:
            return eval_dataset(self.source, self.frame)
        if self._embedded is None:
            segmenter = Segmenter(model, [1], self.batch_size)
            records = [dict(r) for r in eval_dataset(self.source, self.frame)]
            for i in range(0, len(records), self.batch_size):
                batch = records[i:i + self.batch_size]
                for r, emb in zip(batch, segmenter.embed(batch)):
                    r["embedding"] = emb
                    del r["image"]
            self._embedded = records
        return self._embedded


def validate(model: AutoMedSAM, split: ValidationSplit, class_names: Sequence[str], log,
             step: int, min_area: float = 0.0) -> Evaluation | None:
    """DSC/NSD and presence of ``model`` on the validation split under the presence rule
    ``min_area``, written to TensorBoard and the log (None without a validation split)."""
    if len(split) == 0:
        return None
    segmenter = Segmenter(model, range(1, len(class_names) + 1), split.batch_size, min_area)
    ev = evaluate_records(segmenter, split.records(model), class_names)
    metrics = ev.metrics
    log.scalars(step, {"dsc": metrics.dsc, "nsd": metrics.nsd,
                       "presence/precision": ev.presence.precision,
                       "presence/recall": ev.presence.recall, **{
        f"dsc/{class_names[c - 1]}": s.dsc for c, s in metrics.per_class.items()}}, "validation")
    log.info(paper_table(ev, f"validation at step {step}"))
    return ev


def calibrate_presence(model: AutoMedSAM, split: ValidationSplit, num_classes: int, log,
                       name: str) -> dict | None:
    """The presence rule of ``model`` calibrated on the validation split, as stored in a
    model's ``config.json``: ``min_area``, the validation ``accuracy`` and ``pairs`` (None
    without a validation split: every class is drawn)."""
    if len(split) == 0:
        log.info("presence: no validation split to calibrate on; every class is drawn")
        return None
    segmenter = Segmenter(model, range(1, num_classes + 1), split.batch_size)
    areas, truth = presence_scores(segmenter, split.records(model))
    if problem := too_few_kinds(truth):
        log.info(f"presence: {problem}; every class is drawn where its mask is not empty "
                 "(validate on more cases to calibrate)")
        return None
    min_area, accuracy = calibrate(areas, truth)
    what = route_of(model).presence_score
    log.info(f"presence ({name}): a class counts on a slice when its {what} covers ≥ "
             f"{min_area:.2e} of the image; {100 * accuracy:.1f} % of {truth.size} validation "
             "(slice, class) pairs right")
    return {"min_area": min_area, "accuracy": accuracy, "pairs": int(truth.size),
            "rule": f"a class is present on a slice when its {what} covers at least min_area "
                    "of the image"}
