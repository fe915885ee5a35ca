"""The validation scores a training run reports, recomputed without the evaluator: the exported
model run slice by slice, one class at a time (batch 1), through the NumPy image frames of
``frames_reference``, its stored presence rule applied to the areas found here, the case stacked
here (a 2D image when it has one slice: NSD τ in pixels), DSC counted with NumPy and NSD with
:func:`automedsam_jax.core.metrics.nsd` (checked against surface-distance in ``test_metrics``).

The two routes agree up to float32 rounding, so a few voxels whose logits are within
``frames_reference.REL_TOL`` of a tie may go either way: a reported (DSC, NSD) of a class must be
that of one of the masks the reference allows (``frames_reference.candidate_masks``). The
validation split of the training tests is one case, so a per-class mean over cases is that
case's score.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from automedsam_jax.core.metrics import nsd
from automedsam_jax.io.rundir import load_automedsam
from automedsam_references.frames_reference import (area_bounds, candidate_masks, class_logits,
                                                   possible_labels, tolerance)


def numpy_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """2|G ∩ P| / (|G| + |P|), 1 for two empty masks."""
    total = int(gt.sum()) + int(pred.sum())
    return 2 * int((gt & pred).sum()) / total if total else 1.0


def assert_validation_scores(per_class: dict[str, dict], model_dir, builder, atol: float = 1e-6):
    """``per_class`` (``{class name: {"dsc": ..., "nsd": ...}}``, as a run reports its
    validation) holds exactly the classes validation scores (in the ground truth or the
    prediction of the one validation case of ``builder``), each with the DSC and NSD, to
    ``atol``, of a mask the reference allows for the model directory ``model_dir``."""
    trained = load_automedsam(model_dir)
    model, names, min_area = trained.model, trained.class_names, trained.min_area
    class_ids = np.arange(1, len(names) + 1)
    forward = jax.jit(lambda m, x, c: m(x, c).low_res_logits)
    src = builder.as_data_source("validation")
    records = sorted((src[i] for i in range(len(src))),
                     key=lambda r: (r["case_id"], int(r["slice_index"])))
    assert records and len({r["case_id"] for r in records}) == 1, "expected one validation case"
    depth = int(records[0]["depth"])
    assert [int(r["slice_index"]) for r in records] == list(range(depth))
    gt, labels, options = [], [], []
    for r in records:
        logits = class_logits(lambda x, c: forward(model, jnp.asarray(x)[None],
                                                    jnp.array([c]))[0],
                              r["image"], class_ids, model.config.sam.frame)
        eps = tolerance(logits)
        lo, hi = area_bounds(logits, eps)
        assert not np.any((lo < min_area) & (min_area <= hi)), "a presence decision is in doubt"
        label, option = possible_labels(logits, class_ids, eps, keep=lo >= min_area)
        gt.append(np.asarray(r["label"]))
        labels.append(label)
        options.append(option)
    gt, labels, options = np.stack(gt), np.stack(labels), np.stack(options)
    spacing = tuple(float(s) for s in records[0]["spacing"])
    if depth == 1:  # a 2D image: NSD in pixels
        gt, labels, options, spacing = gt[0], labels[0], options[0], None
    axis = 0 if depth == 1 else 1
    decided = options.sum(axis=axis) == 1
    scored = set()
    for i, (c, name) in enumerate(zip(class_ids, names)):
        g, possible = gt == c, np.take(options, i + 1, axis=axis)
        certain = possible & decided
        if not (g.any() or possible.any()):
            continue  # absent from both: not scored
        assert g.any() or certain.any(), f"{name}: scored or not is a rounding question"
        scored.add(name)
        assert name in per_class, (name, sorted(per_class))
        dsc, score = per_class[name]["dsc"], per_class[name]["nsd"]
        assert any(abs(numpy_dice(g, p) - dsc) <= atol and abs(nsd(g, p, spacing) - score) <= atol
                   for p in candidate_masks(labels == c, certain, possible & ~decided)), \
            (name, dsc, score)
    assert scored == set(per_class), (sorted(scored), sorted(per_class))
