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

With a physical scale (``FrameConfig.spacing``), a slice of known pixel spacing is first taken to
its **physical canvas** — resampled to that spacing and centred on an ``S × S`` canvas, cropped or
zero-padded (:func:`to_physical`, :class:`Physical` says where it lies) — which then plays the
original frame's part; :func:`from_physical` takes logits on the canvas back to the slice.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
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


class Physical(NamedTuple):
    """Where a slice lies on its physical canvas: its ``original_size`` (H, W), its size
    ``(h, w)`` once resampled, and the canvas position ``offset`` (y, x) of its top-left pixel
    (negative where the canvas crops it)."""

    original_size: tuple[int, int]
    size: tuple[int, int]
    offset: tuple[int, int]


def physical_placement(original_size: tuple[int, int], spacing_yx: tuple[float, float],
                       frame: FrameConfig) -> Physical:
    """The :class:`Physical` of a ``(H, W)`` slice of ``spacing_yx`` mm per pixel on the
    ``frame.size`` canvas at ``frame.spacing`` mm per pixel (centred)."""
    (h0, w0), (sy, sx) = original_size, spacing_yx
    h = max(1, int(round(h0 * sy / frame.spacing)))
    w = max(1, int(round(w0 * sx / frame.spacing)))
    return Physical((int(h0), int(w0)), (h, w), ((frame.size - h) // 2, (frame.size - w) // 2))


def _overlap(place: Physical, size: int):
    """Source (resampled slice) and canvas slices of the part the canvas shows."""
    (h, w), (oy, ox) = place.size, place.offset
    y0, x0 = max(0, -oy), max(0, -ox)
    y1, x1 = min(h, size - oy), min(w, size - ox)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 + oy, y1 + oy), slice(x0 + ox, x1 + ox))


def to_physical(image: np.ndarray, spacing_yx: tuple[float, float], frame: FrameConfig,
                label: np.ndarray | None = None):
    """An original-frame slice ``(H, W[, C])`` of ``spacing_yx`` mm per pixel → its physical
    canvas ``(S, S[, C])`` float32 (``frame.interpolation``; zero outside the slice), its
    :class:`Physical`, and with ``label`` ``(H, W)`` the label on the canvas (nearest)."""
    place = physical_placement(image.shape[:2], spacing_yx, frame)
    src, dst = _overlap(place, frame.size)
    x = resize_image(image, place.size, frame.interpolation)
    canvas = np.zeros((frame.size, frame.size, *x.shape[2:]), np.float32)
    canvas[dst] = x[src]
    if label is None:
        return canvas, place
    lab = np.rint(resize_image(np.asarray(label, np.float32), place.size, "nearest"))
    label_canvas = np.zeros((frame.size, frame.size), np.asarray(label).dtype)
    label_canvas[dst] = lab[src].astype(label_canvas.dtype)
    return canvas, place, label_canvas


def from_physical(logits: jax.Array, place: Physical, fill: float = -1e4) -> jax.Array:
    """Canvas-frame logits ``(..., S, S)`` → the slice's original frame ``(..., H, W)``: the
    slice's region cut out of the canvas (``fill`` where the canvas cropped it), resized
    bilinearly to ``place.original_size``."""
    size = logits.shape[-1]
    src, dst = _overlap(place, size)
    region = jnp.full(logits.shape[:-2] + tuple(place.size), fill, logits.dtype)
    region = region.at[(..., *src)].set(logits[(..., *dst)])
    return resize_logits(region, place.original_size)


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

    ``frame.mask_resize == "sam"``: upsample to the S×S input frame, crop the padding, resize to
    the original size. ``"medsam"``: crop the padding at low-res scale, resize to the original size.
    Threshold the result at 0 (= probability 0.5) for a binary mask.
    """
    (h, w), low = resized.resized_size, low_res_logits.shape[-1]
    if frame.mask_resize == "sam":
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
           "mask_to_low_res", "Physical", "to_physical", "from_physical"]


def model_input(pixels: np.ndarray, frame: FrameConfig,
                spacing_yx: tuple[float, float] | None = None) -> dict:
    """One original-frame slice ``(H, W)``/``(H, W, C)`` → what a segmenter needs: ``image``
    (S, S, 3) float32 input frame, and ``original_size``/``resized_size`` (h, w) to map its
    logits back (:class:`Resized`). With a physical scale (``frame.spacing``) and the slice's
    ``spacing_yx``, the frame takes the slice's physical canvas (:func:`to_physical`), and
    ``physical`` (:class:`Physical`) maps the canvas back to the slice."""
    out = {}
    if frame.spacing is not None and spacing_yx is not None:
        pixels, out["physical"] = to_physical(check_image(pixels), spacing_yx, frame)
    image, resized = preprocess_image(pixels, frame)
    return {"image": image, "original_size": resized.original_size,
            "resized_size": resized.resized_size, **out}


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(4,)`` float32 ``x0, y0, x1, y1`` of a non-empty binary mask, in the mask's frame
    (inclusive pixel indices of the first/last foreground column and row, as MedSAM)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot take the box of an empty mask")
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float32)
