"""The ``box`` route — the manual-prompt baseline of the paper's §4.5 (Table 8): a SAM-family
model (a converted MedSAM/LiteMedSAM, or an AutoMedSAM's backbone) prompted with the
ground-truth box of each class present in the slice, enlarged by ``offset`` original-frame pixels
per side and clipped to the image, or with the whole image (``offset="image"``).

A class absent from the slice's ground truth gets no box: its prediction is empty. Classes with
the same box (every class, for the whole image) get one mask, labelled with the lowest of their
ids — the model has nothing to tell them apart. Evaluation only: it needs the labels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..automedsam import box_masks
from ..preprocess import Resized, boxes_to_input_frame, mask_box
from . import Route, register

BoxOffset = int | Literal["image"]


def check_offset(offset: BoxOffset) -> BoxOffset:
    if offset != "image" and (not isinstance(offset, int) or offset < 0):
        raise ValueError(f"box offset must be a non-negative number of pixels or 'image', "
                         f"got {offset!r}")
    return offset


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


@register
class BoxRoute(Route):
    """GT boxes + ``offset`` (:meth:`with_offset`; 5 px by default, MedSAM's setting)."""

    name = "box"
    trains = False
    offset: BoxOffset = 5

    def with_offset(self, offset: BoxOffset) -> "BoxRoute":
        route = BoxRoute()
        route.offset = check_offset(offset)
        return route

    def prompts(self, model, proposal, record, class_ids, input_size):
        label = np.asarray(record["label"])
        boxes = np.zeros((class_ids.size, 4), np.float32)
        valid = np.zeros(class_ids.size, bool)
        for i, c in enumerate(class_ids):
            if (label == c).any():
                boxes[i] = gt_box(label == c, self.offset)
                # Identical boxes give identical masks: one prompt, for the lowest id.
                valid[i] = not any((boxes[j] == boxes[i]).all() for j in np.flatnonzero(valid))
        resized = Resized(tuple(record["original_size"]), tuple(record["resized_size"]))
        return boxes_to_input_frame(boxes, resized), valid, None

    def masks(self, model, embeddings, prompts, class_ids):
        return box_masks(model, embeddings, prompts)[0]
