"""Batched slice segmentation: B slices embedded at once, K prompts decoded against each embedding.

Two prompt kinds, one driver (:func:`segment_slices`):

* :class:`ClassSegmenter` — AutoMedSAM: every requested class id of every slice (the class prompt
  encoder needs nothing else; a model with a localiser reads each class's box off its map and
  prompts the backbone with it, see :mod:`automedsam_jax.core.modeling.localiser`).
* :class:`BoxSegmenter` — the manual-prompt baseline of the paper's §4.5 (Table 8): a converted
  MedSAM/LiteMedSAM prompted with the ground-truth box of each class present in the slice,
  enlarged by ``offset`` original-frame pixels per side and clipped to the image, or with the
  whole image (``offset="image"``). A class absent from the slice's ground truth gets no box:
  its prediction is empty. Classes with the same box (every class, for the whole image) get one
  mask, labelled with the lowest of their ids — the model has nothing to tell them apart.

A slice is a record of :func:`automedsam_jax.data.eval_dataset` or
:func:`automedsam_jax.core.preprocess.model_input` (``image`` ``(S, S, 3)`` float32 input frame,
``original_size``/``resized_size``, and ``label`` ``(H, W)`` for box prompts).
Shapes stay static: the jitted model call always sees ``batch_size`` slices (the last batch is
zero-padded and the padding's outputs dropped) and K prompts per slice, so it compiles once;
the per-slice step back to the original frame
(:func:`automedsam_jax.core.preprocess.postprocess_masks`, then
:func:`automedsam_jax.core.automedsam.label_map`) compiles once per original image size.

Overlapping masks are resolved per pixel by the highest logit (ties to the lower id); pixels
where no class exceeds logit 0 (probability 0.5) are background. The same rule holds for both
prompt kinds, so AutoMedSAM and MedSAM are scored on equal terms.

Presence (beyond the paper): class prompting always draws *something*, so a segmenter may carry
``min_area``, the smallest fraction of the image a class's mask (p > 0.5, original frame, before
classes compete for pixels) must cover for the class to count as present on that slice; below
it the class is dropped there. :mod:`.presence` calibrates it on validation and training
stores it with the model. 0 keeps every mask (the paper). With a localiser the score is the
area of the class's largest component on the map (the same rule, read off the map).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..core.automedsam import AutoMedSAM, embed_images, label_map
from ..core.config import FrameConfig
from ..core.modeling import Sam
from ..core.backend import image_by_image
from ..core.modeling.localiser import map_boxes
from ..core.pipelining import prefetch
from ..core.preprocess import Resized, boxes_to_input_frame, mask_box, postprocess_masks

Record = dict[str, Any]
BoxOffset = int | Literal["image"]


class Segmenter:
    """Shared batching: subclasses set ``frame``, ``class_ids`` (the K decoded prompts' ids) and
    the jitted ``_logits(state, images (B, S, S, 3), prompts (B, K, ...)) → (B, K, L, L)``, and
    give each slice's prompts."""

    frame: FrameConfig
    class_ids: np.ndarray  # (K,) int32: the id each decoded prompt stands for

    def __init__(self, model: nnx.Module, batch_size: int, min_area: float = 0.0):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        if not 0.0 <= min_area < 1.0:
            raise ValueError(f"min_area is a fraction of the image in [0, 1), got {min_area}")
        self.batch_size = batch_size
        self.min_area = float(min_area)
        self._graphdef, self._state = nnx.split(model)

    def prompts(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        """(prompt array ``(K, ...)``, which of the K prompts are real ``(K,)`` bool)."""
        raise NotImplementedError

    def logits(self, images: np.ndarray, prompts: np.ndarray) -> jax.Array:
        """``(B, S, S, 3)`` input-frame images, ``(B, K, ...)`` prompts → ``(B, K, L, L)``."""
        return self._logits(self._state, images, prompts)

    def run_batch(self, records: Sequence[Record]
                  ) -> tuple[jax.Array, np.ndarray, np.ndarray | None]:
        """Dispatch one batch (≤ ``batch_size`` records; padded here) → low-res logits
        ``(B, K, L, L)`` (asynchronous), the valid-prompt mask ``(n, K)`` and the presence
        scores ``(n, K)`` when they do not come from the masks (else None)."""
        images = self.images(records)
        prompts, valid = zip(*(self.prompts(r) for r in records))
        padding = (np.zeros_like(prompts[0]),) * (self.batch_size - len(records))
        prompts = np.stack(prompts + padding)
        return self.logits(images, prompts), np.stack(valid), None

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
        if presence is None:
            index, area = _labels(logits, jnp.asarray(valid), self.min_area, resized,
                                  self.frame)
        else:
            keep = valid & (presence >= self.min_area)
            index, area = _labels(logits, jnp.asarray(keep), 0.0, resized, self.frame)
            area = presence
        lut = np.concatenate([[0], self.class_ids]).astype(np.uint8)
        return lut[np.asarray(index)], np.asarray(area)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _labels(logits, valid, min_area, resized: Resized, frame: FrameConfig):
    """``(K, L, L)`` logits → ``(H, W)`` int32 index 1..K into the decoded prompts (0: none) and
    the ``(K,)`` fraction of the image each mask covers. :func:`label_map` runs on the logits
    with threshold 0 (p > 0.5, SAM's mask threshold), which also avoids float32 sigmoids
    rounding to exactly 0.5 near the boundary; masks under ``min_area`` take no pixel."""
    up = postprocess_masks(logits, resized, frame)
    area = jnp.where(valid, jnp.mean(up > 0, axis=(1, 2)), 0.0)
    keep = valid & (area >= min_area)
    return label_map(jnp.where(keep[:, None, None], up, -jnp.inf), threshold=0.0), area


class ClassSegmenter(Segmenter):
    """AutoMedSAM on B slices × the K class ids ``class_ids``: one embedding per slice, the K
    class prompts decoded against it, noise-free diffusion (deterministic). A model with a
    localiser: the embedding's map gives each class a box (and its presence score) on the host,
    then the K boxes are decoded by the backbone."""

    def __init__(self, model: AutoMedSAM, class_ids: Iterable[int], batch_size: int = 4,
                 min_area: float = 0.0):
        if not isinstance(model, AutoMedSAM):
            raise TypeError(f"ClassSegmenter needs an AutoMedSAM, not a {type(model).__name__}")
        super().__init__(model, batch_size, min_area)
        self.frame = model.config.sam.frame
        self.class_ids = np.asarray(list(class_ids), np.int32)
        if self.class_ids.size == 0:
            raise ValueError("no class ids to segment")
        self.localiser = model.config.localiser
        if self.localiser is None:
            self._logits = jax.jit(per_slice(functools.partial(_class_logits, self._graphdef)))
        else:
            self._embed_map = jax.jit(per_slice(functools.partial(_embed_map, self._graphdef)))
            self._box_logits = jax.jit(functools.partial(_box_masks, self._graphdef))

    def prompts(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        return self.class_ids, np.ones(self.class_ids.size, bool)

    def run_batch(self, records: Sequence[Record]
                  ) -> tuple[jax.Array, np.ndarray, np.ndarray | None]:
        if self.localiser is None:
            return super().run_batch(records)
        n, k = len(records), self.class_ids.size
        emb, maps = self._embed_map(self._state, self.images(records),
                                    np.zeros((self.batch_size, 1), np.int32))
        maps = np.asarray(maps)
        boxes = np.zeros((self.batch_size, k, 4), np.float32)
        presence = np.zeros((n, k), np.float32)
        for i, r in enumerate(records):
            boxes[i], presence[i] = map_boxes(maps[i], self.class_ids,
                                              tuple(int(x) for x in r["resized_size"]),
                                              self.frame.size, self.localiser.margin)
        return self._box_logits(self._state, emb, boxes), presence > 0, presence


def per_slice(logits_fn):
    """``logits_fn(state, images (B, ...), prompts (B, ...)) → pytree of (B, ...)`` run one
    slice at a time on a CPU, batched elsewhere (:func:`automedsam_jax.core.backend.
    image_by_image`): the state is passed whole, each slice with its own prompts. Same outputs
    up to float rounding."""
    return image_by_image(logits_fn, in_axes=(None, 0, 0))


def _embed_map(graphdef, state, images, _):
    """``(B, S, S, 3)`` images → embeddings ``(B, g, g, C)`` and localiser maps
    ``(B, g, g, K + 1)`` (the ignored last argument keeps :func:`per_slice`'s form)."""
    model = nnx.merge(graphdef, state)
    emb = embed_images(model, images)
    return emb, model.localise(emb)


def _box_masks(graphdef, state, embeddings, boxes):
    """``(B, g, g, C)`` embeddings, ``(B, K, 4)`` input-frame boxes → ``(B, K, L, L)`` logits."""
    return nnx.merge(graphdef, state).box_masks(embeddings, boxes)[0]


def _class_logits(graphdef, state, images, class_ids):
    """``(B, S, S, 3)`` images, ``(B, K)`` ids → ``(B, K, L, L)`` low-res logits."""
    model = nnx.merge(graphdef, state)
    low = model.decode(embed_images(model, images), class_ids).low_res_logits
    return low.reshape(*class_ids.shape, *low.shape[1:])


class BoxSegmenter(Segmenter):
    """A box-prompted SAM/MedSAM/LiteMedSAM on B slices × classes 1..K: the GT box of each class
    present in a slice, ``offset`` px larger per side (original frame, clipped to the image), or
    the whole image for ``offset="image"``. Classes absent from the slice's GT are not prompted
    (empty prediction). Classes whose boxes coincide (always so for ``"image"``) cannot be told
    apart: the box is decoded once, for the lowest of their ids."""

    def __init__(self, model: Sam, num_classes: int, offset: BoxOffset, batch_size: int = 4):
        if not isinstance(model, Sam):
            raise TypeError(f"box prompts need a SAM-family model (python -m convert), not a "
                            f"{type(model).__name__}")
        if offset != "image" and (not isinstance(offset, int) or offset < 0):
            raise ValueError(f"box offset must be a non-negative number of pixels or 'image', "
                             f"got {offset!r}")
        super().__init__(model, batch_size)
        self.frame = model.config.frame
        self.class_ids = np.arange(1, num_classes + 1, dtype=np.int32)
        self.offset = offset
        self._logits = jax.jit(per_slice(functools.partial(_box_logits, self._graphdef)))

    def prompts(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        label = np.asarray(record["label"])
        boxes = np.zeros((self.class_ids.size, 4), np.float32)
        valid = np.zeros(self.class_ids.size, bool)
        for i, c in enumerate(self.class_ids):
            if (label == c).any():
                boxes[i] = gt_box(label == c, self.offset)
                # Identical boxes give identical masks: one prompt, for the lowest id.
                valid[i] = not any((boxes[j] == boxes[i]).all() for j in np.flatnonzero(valid))
        resized = Resized(tuple(record["original_size"]), tuple(record["resized_size"]))
        return boxes_to_input_frame(boxes, resized), valid


def _box_logits(graphdef, state, images, boxes):
    """``(B, S, S, 3)`` images, ``(B, K, 4)`` input-frame boxes → ``(B, K, L, L)`` logits."""
    model = nnx.merge(graphdef, state)
    b, k = boxes.shape[:2]
    emb = embed_images(model, images)
    low, _ = model.decode(jnp.repeat(emb, k, axis=0), boxes=boxes.reshape(b * k, 4))
    return low[:, 0].reshape(b, k, *low.shape[2:])


def gt_box(mask: np.ndarray, offset: BoxOffset) -> np.ndarray:
    """Box ``(4,)`` ``x0, y0, x1, y1`` (original-frame pixels) of a non-empty ``(H, W)`` mask:
    its tight box (:func:`automedsam_jax.core.preprocess.mask_box`) moved out by ``offset`` px per
    side and clipped to ``[0, W] × [0, H]``; ``"image"`` gives ``(0, 0, W, H)``."""
    h, w = mask.shape
    if offset == "image":
        return np.array([0, 0, w, h], np.float32)
    x0, y0, x1, y1 = mask_box(mask)
    return np.array([max(x0 - offset, 0), max(y0 - offset, 0), min(x1 + offset, w),
                     min(y1 + offset, h)], np.float32)


def segment_slices(segmenter: Segmenter, records: Iterable[Record]
                   ) -> Iterator[tuple[Record, np.ndarray, np.ndarray]]:
    """``(record, labels, areas)`` for every record, in order; labels ``(H, W)`` uint8 class ids
    in the original frame, areas ``(K,)`` the fraction of the image each decoded prompt's mask
    covers (see :meth:`Segmenter.to_labels`). Batch i + 1 is dispatched before batch i is
    brought back to the original frame, so host work overlaps the model on accelerators."""
    for batch, outputs in prefetch(_batches(records, segmenter.batch_size),
                                   lambda batch: (batch, segmenter.run_batch(batch)), size=1):
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
