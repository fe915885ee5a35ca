"""Per-sample preprocessing of one slice and one class, built on
:mod:`automedsam_jax.core.preprocess`.

Frames:

* **original frame** — the stored slice, image ``(H, W, C)`` uint8, label ``(H, W)`` class ids.
* **input frame** — ``(S, S, 3)`` float32 encoder input, ``S = frame.size`` (1024 for SAM/MedSAM,
  256 for LiteMedSAM); boxes are ``x0, y0, x1, y1`` pixels of this frame.
* **low-res frame** — ``(L, L)`` with ``L = 256``: the decoder's mask logits, the training target
  mask and the shape-distance map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.config import FrameConfig
from ..core.modeling.localiser import grid_extent
from ..core.preprocess import (Resized, boxes_to_input_frame, mask_box, mask_to_low_res,
                               preprocess_image, resize_image, resized_size, to_physical)
from .augment import AugmentConfig, augment_slice

BOX_JITTER_AT_1024 = 20


def box_jitter_pixels(frame: FrameConfig) -> int:
    """Largest box jitter per side, in input-frame pixels: 20 at 1024, 5 at 256 (∝ frame size)."""
    return round(BOX_JITTER_AT_1024 * frame.size / 1024)


def jitter_box(box: np.ndarray, max_shift: int, extent: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """Move each side of an input-frame box outwards by a random integer 0..``max_shift`` pixels
    and clip to the image's extent ``(h, w)`` in the input frame (as MedSAM's training)."""
    h, w = extent
    shift = rng.integers(0, max_shift + 1, size=4).astype(np.float32)
    x0, y0, x1, y1 = box
    return np.array([max(0.0, x0 - shift[0]), max(0.0, y0 - shift[1]),
                     min(float(w), x1 + shift[2]), min(float(h), y1 + shift[3])], np.float32)


def flip(array: np.ndarray, horizontal: bool, vertical: bool) -> np.ndarray:
    """Flip an original-frame ``(H, W, ...)`` array left-right and/or up-down (a view)."""
    if horizontal:
        array = array[:, ::-1]
    if vertical:
        array = array[::-1]
    return array


def pixel_spacing(record: dict) -> tuple[float, float] | None:
    """A slice record's in-plane pixel spacing ``(y, x)`` mm, or None for a 2-D image (whose
    ``spacing`` is a stand-in: NSD in pixels)."""
    if int(record.get("depth", 1)) <= 1:
        return None
    spacing = np.asarray(record["spacing"], np.float64)
    return float(spacing[1]), float(spacing[2])


def training_view(image: np.ndarray, label: np.ndarray, frame: FrameConfig, *,
                  case_id: str, slice_index: int, variant: int = 0,
                  spacing: tuple[float, float] | None = None,
                  flips: tuple[bool, bool] = (False, False),
                  augment: AugmentConfig = AugmentConfig(), seed: int = 0,
                  keep_class: int | None = None, preprocess: bool = True
                  ) -> tuple[np.ndarray | None, np.ndarray, int]:
    """One slice as training sees it — to its physical canvas (``frame.spacing`` and the slice's
    ``spacing``: :func:`~automedsam_jax.core.preprocess.to_physical`), augment, then flip, then
    preprocess — shared by the training transform and the embedding cache, so the cache embeds
    exactly the training images.

    ``image`` ``(H, W, C)`` and ``label`` ``(H, W)`` in the original frame → augmented variant
    ``variant`` of the slice (:func:`~.augment.augment_slice` of ``augment``, ``seed``,
    ``case_id``, ``slice_index``; 0: the stored slice), flipped (``flips``: horizontal,
    vertical, :func:`flip`) in the original frame, the image then preprocessed to the input
    frame. ``keep_class``: when the augmented variant loses this class and the stored slice has
    it (a zoom cropped it away), the stored slice instead (variant 0).

    Returns (input-frame image ``(S, S, 3)`` float32, or None with ``preprocess=False``
    (training from cached embeddings skips it); the label ``(H, W)`` after augmentation and
    flips; the variant used)."""
    if frame.spacing is not None and spacing is not None:
        image, _, label = to_physical(image, spacing, frame, label)
        image = np.round(image).astype(np.uint8)  # the stored slice's type, for augment_slice
    if variant:
        aug_image, aug_label = augment_slice(image, label, augment, seed, case_id, slice_index,
                                             variant)
        if keep_class is not None and (label == keep_class).any() \
                and not (aug_label == keep_class).any():
            variant = 0  # the zoom cropped the kept class away: use the stored slice
        else:
            image, label = aug_image, aug_label
    image, label = flip(image, *flips), flip(label, *flips)
    return (preprocess_image(image, frame)[0] if preprocess else None), label, variant


def shape_distance_map(mask: np.ndarray) -> np.ndarray:
    """The shape-distance map D (docs/method.md#shape-distance) of a binary low-res mask
    ``(L, L)``: Euclidean distance of every pixel to the GT boundary divided by ``L``, float32.

    Inside pixels get their distance to the nearest background pixel, outside pixels their
    distance to the nearest foreground pixel (so pixels next to the boundary get ``1/L``). An
    empty mask has no boundary: D is all zeros, and the shape-distance loss vanishes for it.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.float32)
    dist = np.where(mask, ndimage.distance_transform_edt(mask),
                    ndimage.distance_transform_edt(~mask))
    return (dist / mask.shape[-1]).astype(np.float32)


def class_sample(image: np.ndarray | None, label: np.ndarray, class_id: int, frame: FrameConfig,
                 low_res: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Everything the loss needs for one slice and one class (present in it, or absent: a
    negative, beyond the paper).

    Inputs in the original frame: ``image (H, W, C)``, ``label (H, W)``. Returns ``image``
    ``(S, S, 3)`` float32 (input frame), ``mask`` ``(low_res, low_res)`` float32 0/1 (low-res
    frame), ``box`` ``(4,)`` float32 (input frame; jittered by 0..J px per side when ``rng`` is
    given), ``dist`` ``(low_res, low_res)`` float32 (low-res frame). ``image=None`` (training from
    cached embeddings) leaves ``image`` out and skips its preprocessing. An absent class gets an
    empty mask, a zero distance map and a zero box (and draws nothing from ``rng``).
    """
    out = {}
    if image is None:
        resized = Resized(label.shape[:2], resized_size(label.shape[:2], frame))
    else:
        out["image"], resized = preprocess_image(image, frame)
    target = label == class_id
    if not target.any():
        empty = np.zeros((low_res, low_res), np.float32)
        out.update(mask=empty, box=np.zeros(4, np.float32), dist=empty.copy())
        return out
    box = boxes_to_input_frame(mask_box(target), resized)
    if rng is not None:
        box = jitter_box(box, box_jitter_pixels(frame), resized.resized_size, rng)
    low = mask_to_low_res(target, resized, frame, low_res)
    out.update(mask=low.astype(np.float32), box=box, dist=shape_distance_map(low))
    return out



def slice_sample(image: np.ndarray | None, label: np.ndarray, num_classes: int,
                 frame: FrameConfig, low_res: int, rng: np.random.Generator | None = None
                 ) -> dict[str, np.ndarray]:
    """Every class 1..K of one slice (the all-classes layout; beyond the paper).

    :func:`class_sample` of each class with a leading class axis: ``class_id`` ``(K,)`` int32
    1..K, ``mask`` and ``dist`` ``(K, low_res, low_res)`` float32, ``box`` ``(K, 4)`` float32
    input frame, ``present`` ``(K,)`` bool; the image is preprocessed once. An absent class (a
    *negative*) has an empty mask, a zero distance map and a zero box (no teacher: the loss
    ignores it there). A class is present when its low-res mask is non-empty (a few original
    pixels can vanish in the 256 frame).
    """
    out = {} if image is None else {"image": preprocess_image(image, frame)[0]}
    per_class = [class_sample(None, label, c, frame, low_res, rng)
                 for c in range(1, num_classes + 1)]
    present = np.array([s["mask"].any() for s in per_class])
    out.update(class_id=np.arange(1, num_classes + 1, dtype=np.int32),
               mask=np.stack([s["mask"] for s in per_class]),
               box=np.stack([s["box"] for s in per_class]) * present[:, None],
               dist=np.stack([s["dist"] for s in per_class]), present=present)
    return out


def grid_labels(label: np.ndarray, frame: FrameConfig, grid: int) -> np.ndarray:
    """Original-frame class ids ``(H, W)`` → ``(grid, grid)`` int32 ids at the image-embedding
    grid (the localiser's target): nearest-neighbour resize to the image's extent in the input
    frame at ``grid / S`` scale; the padding is 0 (background)."""
    hg, wg = grid_extent(resized_size(label.shape[:2], frame), frame.size, grid)
    out = np.zeros((grid, grid), np.int32)
    out[:hg, :wg] = np.rint(resize_image(np.asarray(label, np.float32), (hg, wg), "nearest"))
    return out
