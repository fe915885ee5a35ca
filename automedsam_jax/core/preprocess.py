"""One preprocessing path for training, evaluation and inference.

Frames (all arrays are channels-last):

* **original frame** — the image as given, ``(H, W)`` or ``(H, W, 3)``, any dtype.
* **input frame** — the encoder input, ``(S, S, 3)`` float32 with ``S = FrameConfig.size``
  (1024 for SAM/MedSAM, 256 for LiteMedSAM). The image occupies the top-left ``(h, w)`` region
  (``Resized``); the rest is zero padding.
* **low-res frame** — the decoder's mask logits, ``(L, L)`` with ``L = 4 × embedding side``
  (256 for every full-size preset), covering the whole input frame.

Images are resized with Pillow on the host (float32 ``"F"`` mode, so no 8-bit rounding); masks go
back to the original frame with :func:`postprocess_masks`, in JAX, so they can be jitted.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from PIL import Image

from .config import FrameConfig

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX,
                "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


class Resized(NamedTuple):
    """Where an original image lies in the input frame: original (H, W) and resized (h, w)."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]


def resized_size(original_size: tuple[int, int], frame: FrameConfig) -> tuple[int, int]:
    """(h, w) the image takes inside the ``frame.size`` square input frame."""
    h, w = original_size
    if frame.resize == "stretch":
        return frame.size, frame.size
    scale = frame.size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize an ``(H, W)`` or ``(H, W, C)`` array to ``size = (h, w)`` as float32, per channel.

    ``interpolation`` is ``"bicubic"``, ``"area"`` (box filter), ``"bilinear"`` or ``"nearest"``.
    Pillow's downscaling filters are antialiased, like scikit-image's ``anti_aliasing=True``.
    """
    image = np.asarray(image, dtype=np.float32)
    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    filt = _PIL_FILTERS[interpolation]
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image).resize((w, h), filt), dtype=np.float32)
    return np.stack([resize_image(image[..., c], size, interpolation)
                     for c in range(image.shape[-1])], axis=-1)


def check_image(image: np.ndarray) -> np.ndarray:
    """The one image rule (preprocessing, the npz reader, the scan reader): ``(H, W)``,
    ``(H, W, 1)`` or ``(H, W, 3)`` finite pixels → ``(H, W)`` or ``(H, W, 3)``; anything else
    (RGBA, multi-channel) is a ``ValueError`` naming the shape. The PNG/JPEG reader decodes files
    to grey or RGB first (:mod:`automedsam_jax.io.scans`: alpha is dropped)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}; "
                         "convert RGBA or multi-channel images to RGB or grayscale first")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or Inf pixels")
    return image


def image_ndim(imgs: np.ndarray) -> int:
    """2 or 3, for an array whose file does not say: 2D when it is ``(H, W)`` or its last axis
    is short (≤ 4 are channels: an RGBA image is then refused by :func:`check_image` rather than
    read as a volume of 4-pixel-wide slices), else a ``(D, H, W)`` volume."""
    return 2 if np.ndim(imgs) == 2 or (np.ndim(imgs) == 3 and np.shape(imgs)[-1] <= 4) else 3


def as_slices(imgs: np.ndarray, ndim: int | None = None) -> np.ndarray:
    """An image (``ndim=2``) or a ``(D, H, W)`` volume (``ndim=3``; ``None``: see
    :func:`image_ndim`) → its slices ``(D, H, W)`` or ``(D, H, W, 3)``, under
    :func:`check_image`'s rule; otherwise a ``ValueError`` naming the shape."""
    imgs = np.asarray(imgs)
    if (ndim or image_ndim(imgs)) == 2:
        return check_image(imgs)[None]
    if imgs.ndim != 3:
        raise ValueError(f"expected a 3D volume (D, H, W), got shape {imgs.shape}")
    if imgs.dtype.kind == "f" and not np.all(np.isfinite(imgs)):
        raise ValueError("image contains NaN or Inf pixels")
    return imgs


def preprocess_image(image: np.ndarray, frame: FrameConfig) -> tuple[np.ndarray, Resized]:
    """Original-frame image → input-frame array ``(S, S, 3)`` float32, and where it lies.

    MedSAM (``stretch``/``minmax``): bicubic to S×S, then ``(x − min)/(max − min)``.
    LiteMedSAM (``longest``/``area``/``minmax``): longest side to S, min-max to [0, 1], zero-pad.
    SAM (``longest``/``bicubic``/``imagenet``): longest side to S, ``(x − mean)/std`` on the
    0–255 scale (a float image is taken to be on that scale), zero-pad bottom/right.
    A grayscale image is resized once and then repeated to 3 channels.
    """
    image = check_image(image)
    original = image.shape[:2]
    h, w = resized_size(original, frame)
    x = resize_image(image, (h, w), frame.interpolation)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    if frame.normalize == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / max(hi - lo, 1e-8)
    else:
        x = (x - np.asarray(frame.pixel_mean, np.float32)) / np.asarray(frame.pixel_std, np.float32)
    out = np.zeros((frame.size, frame.size, 3), np.float32)
    out[:h, :w] = x
    return out, Resized(tuple(original), (h, w))


def boxes_to_input_frame(boxes: np.ndarray, resized: Resized) -> np.ndarray:
    """Boxes ``(..., 4)`` as ``x0, y0, x1, y1`` in original-frame pixels → input-frame pixels."""
    (oh, ow), (h, w) = resized.original_size, resized.resized_size
    scale = np.array([w / ow, h / oh, w / ow, h / oh], np.float32)
    return np.asarray(boxes, np.float32) * scale


def points_to_input_frame(points: np.ndarray, resized: Resized) -> np.ndarray:
    """Points ``(..., 2)`` as ``x, y`` in original-frame pixels → input-frame pixels."""
    (oh, ow), (h, w) = resized.original_size, resized.resized_size
    return np.asarray(points, np.float32) * np.array([w / ow, h / oh], np.float32)


def resize_logits(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of ``(..., H, W)`` logits, like ``F.interpolate(align_corners=False)``
    (half-pixel centres, no antialiasing)."""
    return jax.image.resize(x, x.shape[:-2] + tuple(size), method="linear", antialias=False)


def postprocess_masks(low_res_logits: jax.Array, resized: Resized, frame: FrameConfig) -> jax.Array:
    """Low-res-frame logits ``(..., L, L)`` → original-frame logits ``(..., H, W)``.

    ``frame.postprocess == "sam"``: upsample to the S×S input frame, crop the padding, resize to
    the original size. ``"medsam"``: crop the padding at low-res scale, resize to the original size.
    Threshold the result at 0 (= probability 0.5) for a binary mask.
    """
    (h, w), low = resized.resized_size, low_res_logits.shape[-1]
    if frame.postprocess == "sam":
        x = resize_logits(low_res_logits, (frame.size, frame.size))[..., :h, :w]
    else:
        hl, wl = round(h * low / frame.size), round(w * low / frame.size)
        x = low_res_logits[..., :hl, :wl]
    return resize_logits(x, resized.original_size)


def mask_to_low_res(mask: np.ndarray, resized: Resized, frame: FrameConfig, low: int) -> np.ndarray:
    """Binary original-frame mask ``(H, W)`` → binary low-res-frame mask ``(low, low)`` uint8.

    Nearest-neighbour resize to the image's extent in the low-res frame; the padding is 0.
    """
    h, w = resized.resized_size
    hl, wl = round(h * low / frame.size), round(w * low / frame.size)
    m = resize_image(np.asarray(mask, np.float32), (hl, wl), "nearest")
    out = np.zeros((low, low), np.uint8)
    out[:hl, :wl] = m > 0.5
    return out


__all__ = ["Resized", "resized_size", "resize_image", "check_image", "preprocess_image",
           "boxes_to_input_frame", "points_to_input_frame", "resize_logits", "postprocess_masks",
           "mask_to_low_res"]


def model_input(pixels: np.ndarray, frame: FrameConfig) -> dict:
    """One original-frame slice ``(H, W)``/``(H, W, C)`` → what a segmenter needs: ``image``
    (S, S, 3) float32 input frame, and ``original_size``/``resized_size`` (h, w) to map its
    logits back (:class:`Resized`)."""
    image, resized = preprocess_image(pixels, frame)
    return {"image": image, "original_size": resized.original_size,
            "resized_size": resized.resized_size}


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(4,)`` float32 ``x0, y0, x1, y1`` of a non-empty binary mask, in the mask's frame
    (inclusive pixel indices of the first/last foreground column and row, as MedSAM)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot take the box of an empty mask")
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float32)
