"""Batched slice segmentation: B slices embedded at once, K prompts decoded against each embedding.

One :class:`Segmenter` for every prompt route (:mod:`automedsam_jax.core.routes`): the model's own
(an AutoMedSAM's ``config.prompt``: its class prompt encoder, its localiser's boxes, or both), or
the ``box`` route's ground-truth boxes for any SAM-family model (the manual-prompt baseline of the
paper's §4.5, Table 8: :meth:`~automedsam_jax.core.routes.box.BoxRoute.with_offset`). A batch runs
in three stages: the route's :meth:`~automedsam_jax.core.routes.Route.propose` on the embeddings
(with the encoder, slice by slice on a CPU), its host step per slice
(:meth:`~automedsam_jax.core.routes.Route.prompts`), and its batched
:meth:`~automedsam_jax.core.routes.Route.masks`.

A slice is a record of :func:`automedsam_jax.data.eval_dataset` or
:func:`automedsam_jax.core.preprocess.model_input` (``image`` ``(S, S, 3)`` float32 input frame,
``original_size``/``resized_size``, and ``label`` ``(H, W)`` for box prompts); a record may carry its
``embedding`` ``(g, g, C)`` instead of the image (computed once, e.g. for validation during
training), and the encoder is then skipped.
Shapes stay static: the jitted calls always see ``batch_size`` slices (the last batch is
zero-padded and the padding's outputs dropped) and K prompts per slice, so they compile once;
the per-slice step back to the original frame
(:func:`automedsam_jax.core.preprocess.postprocess_masks`, then
:func:`automedsam_jax.core.automedsam.label_map`) compiles once per original image size.

Overlapping masks are resolved per pixel by the highest logit (ties to the lower id); pixels
where no class exceeds logit 0 (probability 0.5) are background. The same rule holds for every
route, so AutoMedSAM and MedSAM are scored on equal terms.

Presence (beyond the paper): class prompting always draws *something*, so a segmenter may carry
``min_area``, the smallest presence score a class must reach on a slice to count as present
there (below it the class is dropped there): the fraction of the image its mask (p > 0.5,
original frame, before classes compete for pixels) covers, or the score its route gives (the
localiser's largest component on the map). :mod:`automedsam_jax.evaluation.presence`
calibrates it on validation and training stores it with the model. 0 keeps every mask (the paper).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..core.automedsam import embed_images, label_map
from ..core.backend import image_by_image
from ..core.config import FrameConfig
from ..core.pipelining import dispatch_ahead
from ..core.preprocess import Physical, Resized, from_physical, postprocess_masks
from ..core.routes import Record, Route, route_of
from .options import InferenceConfig


def model_frame(model: nnx.Module) -> FrameConfig:
    """The input frame of a :class:`Sam` or an AutoMedSAM."""
    cfg = model.config
    return cfg.frame if hasattr(cfg, "frame") else cfg.sam.frame


class Segmenter:
    """``model`` on B slices × the K class ids ``class_ids`` through ``route`` (default: the
    model's own; a :class:`Sam` needs the ``box`` route)."""

    def __init__(self, model: nnx.Module, class_ids: Iterable[int],
                 batch_size: int = InferenceConfig.batch_size,
                 min_area: float = 0.0, route: Route | None = None):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0.0 <= min_area < 1.0:
            raise ValueError(f"min_area is a fraction of the image in [0, 1), got {min_area}")
        if route is None and not hasattr(model.config, "prompt"):
            raise TypeError(f"a {type(model).__name__} has no prompt route of its own: give it "
                            "the box route (ground-truth boxes)")
        self.route = route or route_of(model)
        self.batch_size = batch_size
        self.min_area = float(min_area)
        self.frame = model_frame(model)
        self.class_ids = np.asarray(list(class_ids), np.int32)
        if self.class_ids.size == 0:
            raise ValueError("no class ids to segment")
        self._model = model
        self._graphdef, self._state = nnx.split(model)
        self._embed_propose = jax.jit(per_slice(functools.partial(
            _embed_propose, self._graphdef, self.route)))
        self._propose = jax.jit(functools.partial(_propose, self._graphdef, self.route))
        self._masks = jax.jit(functools.partial(_masks, self._graphdef, self.route))

    def embed(self, records: Sequence[Record]) -> np.ndarray:
        """The ``(n, g, g, C)`` embeddings of 1..``batch_size`` records (to attach to records
        as ``embedding``, so later passes skip the encoder)."""
        return np.asarray(self._embed_propose(self._state, self.images(records))[0])[
            :len(records)]

    def run_batch(self, records: Sequence[Record]
                  ) -> tuple[jax.Array, np.ndarray, np.ndarray | None]:
        """Dispatch one batch (≤ ``batch_size`` records; padded here) → low-res logits
        ``(B, K, L, L)`` (asynchronous), the decoded-prompt mask ``(n, K)`` and the presence
        scores ``(n, K)`` when they do not come from the masks (else None)."""
        if all("embedding" in r for r in records):
            emb = self._padded([r["embedding"] for r in records])
            proposal = self._propose(self._state, emb)
        else:
            emb, proposal = self._embed_propose(self._state, self.images(records))
        proposal = jax.tree.map(np.asarray, proposal)
        prompts, valid, presence = [], [], []
        for i, r in enumerate(records):
            p, v, s = self.route.prompts(self._model, jax.tree.map(lambda x: x[i], proposal), r,
                                         self.class_ids, self.frame.size)
            prompts.append(p), valid.append(v), presence.append(s)
        prompts = self._padded(prompts)
        logits = self._masks(self._state, emb, prompts, self.class_ids)
        return logits, np.stack(valid), None if presence[0] is None else np.stack(presence)

    def _padded(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """``n`` arrays → ``(batch_size, ...)``, zero-padded."""
        out = np.zeros((self.batch_size, *np.shape(arrays[0])), np.asarray(arrays[0]).dtype)
        out[:len(arrays)] = np.stack(arrays)
        return out

    def images(self, records: Sequence[Record]) -> np.ndarray:
        """The batch's ``(batch_size, S, S, 3)`` input-frame images, zero-padded (1 to
        ``batch_size`` records)."""
        if not 0 < len(records) <= self.batch_size:
            raise ValueError(f"a batch holds 1..{self.batch_size} slices, got {len(records)}")
        size = self.frame.size
        images = np.zeros((self.batch_size, size, size, 3), np.float32)
        for i, r in enumerate(records):
            images[i] = r["image"]
        return images

    def to_labels(self, logits: jax.Array, valid: np.ndarray, record: Record,
                  presence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One slice's ``(K, L, L)`` logits → ``(H, W)`` uint8 class ids (original frame) and
        the ``(K,)`` presence scores — the area fractions of the K masks (0 for prompts not
        decoded), or ``presence`` when given — before the presence rule drops those under
        ``min_area``."""
        resized = Resized(tuple(int(x) for x in record["original_size"]),
                          tuple(int(x) for x in record["resized_size"]))
        physical = record.get("physical")
        physical = None if physical is None else Physical(*(tuple(int(v) for v in x)
                                                            for x in physical))
        if presence is None:
            index, area = _labels(logits, jnp.asarray(valid), self.min_area, resized,
                                  self.frame, physical)
        else:
            keep = valid & (presence >= self.min_area)
            index, area = _labels(logits, jnp.asarray(keep), 0.0, resized, self.frame, physical)
            area = presence
        lut = np.concatenate([[0], self.class_ids]).astype(np.uint8)
        return lut[np.asarray(index)], np.asarray(area)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _labels(logits, valid, min_area, resized: Resized, frame: FrameConfig,
            physical: Physical | None = None):
    """``(K, L, L)`` logits → ``(H, W)`` int32 index 1..K into the decoded prompts (0: none) and
    the ``(K,)`` fraction of the image each mask covers. :func:`label_map` runs on the logits
    with threshold 0 (p > 0.5, SAM's mask threshold), which also avoids float32 sigmoids
    rounding to exactly 0.5 near the boundary; masks under ``min_area`` take no pixel. A slice
    fed on its physical canvas (``physical``) is taken back from the canvas first."""
    up = postprocess_masks(logits, resized, frame)
    if physical is not None:
        up = from_physical(up, physical)
    area = jnp.where(valid, jnp.mean(up > 0, axis=(1, 2)), 0.0)
    keep = valid & (area >= min_area)
    return label_map(jnp.where(keep[:, None, None], up, -jnp.inf), threshold=0.0), area


def per_slice(fn):
    """``fn(state, images (B, ...)) → pytree of (B, ...)`` run one slice at a time on a CPU,
    batched elsewhere (:func:`automedsam_jax.core.backend.image_by_image`): the state is passed
    whole. Same outputs up to float rounding."""
    return image_by_image(fn, in_axes=(None, 0))


def _embed_propose(graphdef, route, state, images):
    """``(B, S, S, 3)`` images → embeddings ``(B, g, g, C)`` and the route's proposal."""
    model = nnx.merge(graphdef, state)
    emb = embed_images(model, images)
    return emb, route.propose(model, emb)


def _propose(graphdef, route, state, embeddings):
    return route.propose(nnx.merge(graphdef, state), embeddings)


def _masks(graphdef, route, state, embeddings, prompts, class_ids):
    return route.masks(nnx.merge(graphdef, state), embeddings, prompts, class_ids)


def segment_slices(segmenter: Segmenter, records: Iterable[Record]
                   ) -> Iterator[tuple[Record, np.ndarray, np.ndarray]]:
    """``(record, labels, areas)`` for every record, in order; labels ``(H, W)`` uint8 class ids
    in the original frame, areas ``(K,)`` the fraction of the image each decoded prompt's mask
    covers (see :meth:`Segmenter.to_labels`). Batch i + 1 is dispatched before batch i is
    brought back to the original frame, so host work overlaps the model on accelerators."""
    for batch, outputs in dispatch_ahead(_batches(records, segmenter.batch_size),
                                         lambda batch: (batch, segmenter.run_batch(batch)),
                                         size=1):
        yield from _finish(segmenter, batch, outputs)


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch = []
    for rec in records:
        batch.append(rec)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _finish(segmenter, records, outputs):
    logits, valid, presence = outputs
    for i, rec in enumerate(records):
        yield rec, *segmenter.to_labels(logits[i], valid[i], rec,
                                        None if presence is None else presence[i])
