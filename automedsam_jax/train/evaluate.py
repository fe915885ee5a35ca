"""Validation: every class of every slice, volumes rebuilt per case, DSC and NSD per class
(:mod:`automedsam_jax.metrics`)."""

from __future__ import annotations

import functools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..automedsam import label_map
from ..data import eval_dataset
from ..metrics import aggregate, case_metrics
from ..preprocess import Resized, postprocess_masks


def evaluate(model, source, num_classes: int, frame, tolerance: float = 2.0):
    """→ :class:`automedsam_jax.metrics.DatasetMetrics` of ``model`` on ``source`` (a split)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def low_res_probs(state, image):
        m = nnx.merge(graphdef, state)
        return m.segment_all(image[None], num_classes)[1]

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def to_labels(probs, original, resized):
        logits = jnp.log(probs) - jnp.log1p(-probs)
        up = postprocess_masks(logits, Resized(original, resized), frame)
        return label_map(jax.nn.sigmoid(up))

    slices = defaultdict(dict)
    meta = {}
    for rec in eval_dataset(source, frame):
        probs = low_res_probs(state, jnp.asarray(rec["image"]))
        pred = to_labels(jnp.clip(probs, 1e-6, 1 - 1e-6), tuple(int(x) for x in rec["original_size"]),
                         tuple(int(x) for x in rec["resized_size"]))
        slices[rec["case_id"]][rec["slice_index"]] = (np.asarray(rec["label"]), np.asarray(pred))
        meta[rec["case_id"]] = rec["spacing"]
    cases = []
    for case, by_z in slices.items():
        zs = sorted(by_z)
        gt = np.stack([by_z[z][0] for z in zs])
        pred = np.stack([by_z[z][1] for z in zs])
        if gt.shape[0] == 1:
            cases.append(case_metrics(gt[0], pred[0], None, range(1, num_classes + 1), tolerance))
        else:
            cases.append(case_metrics(gt, pred, tuple(float(s) for s in meta[case]),
                                      range(1, num_classes + 1), tolerance))
    return aggregate(cases)


def summary_table(metrics, class_names) -> str:
    lines = [f"{'class':<16}{'DSC':>8}{'NSD':>8}{'cases':>7}"]
    for c, s in sorted(metrics.per_class.items()):
        name = class_names[c - 1] if c - 1 < len(class_names) else str(c)
        lines.append(f"{name:<16}{s.dsc:>8.4f}{s.nsd:>8.4f}{s.cases:>7}")
    lines.append(f"{'mean':<16}{metrics.dsc:>8.4f}{metrics.nsd:>8.4f}")
    return "\n".join(lines)
