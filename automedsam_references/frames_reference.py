"""An independent reference for the image frames (original image → encoder input, low-res mask
logits → original-frame logits → label map), written from the definitions in NumPy float64 and
sharing no code with :mod:`automedsam_jax.core.preprocess` (which resizes with Pillow in float32
and maps logits back with ``jax.image.resize``).

* Input frame: ``stretch`` (MedSAM: both sides to S) or ``longest`` (LiteMedSAM/SAM: the longest
  side to S, the other rounded half up, the image at the top left, zeros bottom/right); min-max
  to [0, 1] over the whole resized image (or SAM's mean/std on the 0–255 scale); a grayscale
  image resized once and repeated to 3 channels.
* Resampling: the separable convolution that Pillow documents for its filters (and that PyTorch's
  ``antialias=True`` mode copies): output pixel i of an axis of ``n → m`` pixels is the normalised
  sum of inputs j weighted by ``filter((j + 0.5 − c)/f)``, ``c = (i + 0.5)·n/m``, the filter
  stretched by ``f = max(n/m, 1)`` when downscaling (antialiasing); box (``area``), triangle
  (``bilinear``) and Keys' cubic with a = −0.5 (``bicubic``). Width first, then height.
* Logits back (``medsam``): crop the image's extent in the low-res frame (``round(h·L/S)`` ×
  ``round(w·L/S)``), bilinear to the original size with half-pixel centres and no antialiasing
  (PyTorch's ``align_corners=False``); ``sam``: bilinear to S×S first, crop ``h × w``, then to the
  original size.

Both routes compute the same numbers up to float32 rounding (:data:`REL_TOL`), so a label map
made by the library can differ from this one only where a decision is within rounding of a tie:
:func:`possible_labels` gives, pixel by pixel, every label such a route can produce (one, almost
everywhere), and :func:`assert_labels_possible` and :func:`candidate_masks` compare against that.
"""

from __future__ import annotations

import itertools

import numpy as np

# Rounding of the two float32 routes, relative to the largest |logit| of a slice: the input frames
# differ by ≤ 2 float32 ulps (min-max arithmetic), and ``jax.image.resize`` places its samples in
# float32 (≤ 2e-5 of a low-res pixel at L = 256); on white-noise logits (std 3, far rougher than a
# model's) the original-frame logits differ by ≤ 2e-5 of the largest |logit|, on model outputs by
# ≤ 1e-6. 1e-4 leaves a margin of 5 on the worst case.
REL_TOL = 1e-4

PIXEL_MEAN = np.array([123.675, 116.28, 103.53])  # SAM's ImageNet statistics, 0–255 scale
PIXEL_STD = np.array([58.395, 57.12, 57.375])


def _box(x):
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


def _triangle(x):
    return np.maximum(1.0 - np.abs(x), 0.0)


def _cubic(x, a=-0.5):
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


FILTERS = {"area": (_box, 0.5), "bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}


def resample_axis(x: np.ndarray, size: int, interpolation: str, axis: int) -> np.ndarray:
    """Resize ``x`` along ``axis`` to ``size`` with the (antialiased) convolution above; float64.

    The taps of each output pixel are accumulated one after the other in float64, in the order
    of the input pixels, as Pillow does."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    n = x.shape[0]
    if n == size:
        return np.moveaxis(x.copy(), 0, axis)
    kernel, support = FILTERS[interpolation]
    scale = n / size
    stretch = max(scale, 1.0)
    centre = (np.arange(size) + 0.5) * scale
    first = np.maximum(np.trunc(centre - support * stretch + 0.5).astype(int), 0)
    stop = np.minimum(np.trunc(centre + support * stretch + 0.5).astype(int), n)
    taps = int((stop - first).max())
    j = first[:, None] + np.arange(taps)                               # (size, taps)
    weight = np.where(j < stop[:, None], kernel(((j - centre[:, None]) + 0.5) / stretch), 0.0)
    weight /= weight.sum(axis=1, keepdims=True)
    j = np.minimum(j, n - 1)                                           # zero-weight taps
    out = np.zeros((size,) + x.shape[1:])
    extra = (slice(None),) + (None,) * (x.ndim - 1)
    for t in range(taps):
        out += x[j[:, t]] * weight[:, t][extra]
    return np.moveaxis(out, 0, axis)


def resized_extent(original: tuple[int, int], size: int, resize: str) -> tuple[int, int]:
    """(h, w) of the image inside the S×S input frame: S×S (stretch), or the longest side to S
    and the other ``h·S/max(h, w)`` rounded half up, in integers (longest)."""
    h, w = original
    if resize == "stretch":
        return size, size
    m = max(h, w)
    return (2 * h * size + m) // (2 * m), (2 * w * size + m) // (2 * m)


def input_frame(image: np.ndarray, frame) -> tuple[np.ndarray, tuple[int, int]]:
    """Original-frame ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` image → ``(S, S, 3)`` float32
    encoder input and the (h, w) it occupies."""
    image = np.asarray(image, np.float64)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    h, w = resized_extent(image.shape[:2], frame.size, frame.resize)
    # Pillow resizes single-channel float32 images: the input, and the width pass, are float32.
    x = image.astype(np.float32).astype(np.float64)
    x = resample_axis(x, w, frame.interpolation, axis=1).astype(np.float32)
    x = resample_axis(x, h, frame.interpolation, axis=0).astype(np.float32).astype(np.float64)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    if frame.normalize == "minmax":
        x = (x - x.min()) / max(x.max() - x.min(), 1e-8)
    else:
        x = (x - PIXEL_MEAN) / PIXEL_STD
    out = np.zeros((frame.size, frame.size, 3), np.float32)
    out[:h, :w] = x
    return out, (h, w)


def bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., H, W)`` → ``(..., h, w)`` float64: sample at ``(i + 0.5)·H/h − 0.5`` (clamped to
    the image), linear between the two neighbours, no antialiasing."""
    x = np.asarray(x, np.float64)
    for axis, m in ((-2, size[0]), (-1, size[1])):
        n = x.shape[axis]
        src = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        frac = src - lo
        shape = [1] * x.ndim
        shape[axis] = m
        frac = frac.reshape(shape)
        x = np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac
    return x


def original_logits(low: np.ndarray, original: tuple[int, int], extent: tuple[int, int],
                    frame) -> np.ndarray:
    """Low-res-frame logits ``(..., L, L)`` → original-frame logits ``(..., H, W)``, float64."""
    low = np.asarray(low, np.float64)
    h, w = extent
    if frame.mask_resize == "sam":
        return bilinear(bilinear(low, (frame.size, frame.size))[..., :h, :w], original)
    n, size = low.shape[-1], frame.size
    hl, wl = (2 * h * n + size) // (2 * size), (2 * w * n + size) // (2 * size)  # round half up
    return bilinear(low[..., :hl, :wl], original)


def class_logits(forward, image: np.ndarray, class_ids, frame) -> np.ndarray:
    """The K class logit maps ``(K, H, W)`` float64 of one original-frame image by this route:
    :func:`input_frame`, ``forward(x (S, S, 3) float32, class id) → (L, L)`` low-res logits (the
    model, one class at a time), :func:`original_logits`."""
    x, extent = input_frame(image, frame)
    low = np.stack([np.asarray(forward(x, int(c)), np.float64) for c in class_ids])
    return original_logits(low, np.shape(image)[:2], extent, frame)


def tolerance(logits: np.ndarray) -> float:
    """How far another float32 route's logits may lie from these: :data:`REL_TOL` of the
    largest finite |logit| of the slice."""
    finite = np.abs(logits[np.isfinite(logits)])
    return REL_TOL * float(finite.max()) if finite.size else 0.0


def area_bounds(logits: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(K,)`` fractions of the image each class's mask (logit > 0) covers: at least
    (logit > eps), at most (logit > −eps), for any route within ``eps``."""
    axes = (-2, -1)
    return (logits > eps).mean(axis=axes), (logits > -eps).mean(axis=axes)


def robust_threshold(lo: np.ndarray, hi: np.ndarray, target: float) -> float:
    """The threshold t nearest ``target`` for which "area ≥ t" is the same for every area in
    ``[lo_i, hi_i]`` (see :func:`area_bounds`): the middle of a gap between the intervals'
    ends that no interval straddles."""
    lo, hi = np.ravel(lo), np.ravel(hi)
    ends = np.unique(np.concatenate([lo, hi]))
    gaps = [t for t in (ends[:-1] + ends[1:]) / 2 if not np.any((lo < t) & (t <= hi))]
    assert gaps, "every threshold between the areas is straddled by an area's rounding"
    return float(min(gaps, key=lambda t: abs(t - target)))


def possible_labels(logits: np.ndarray, class_ids, eps: float, keep=None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(K, H, W)`` logits of the classes ``class_ids`` → the ``(H, W)`` label map (the class of
    the highest logit where it is > 0, ties to the first, else 0; classes not in ``keep`` take no
    pixel) and ``(K + 1, H, W)`` bool: which labels (0 = background, then ``class_ids`` in order)
    a route whose logits lie within ``eps`` of these can give at each pixel. A pixel is decided
    where only one label is possible."""
    logits = np.array(logits, np.float64)
    ids = np.asarray(class_ids)
    if keep is not None:
        logits[~np.asarray(keep, bool)] = -np.inf
    top = logits.max(0)
    best = logits.argmax(0)
    labels = np.where(top > 0, ids[best], 0)
    classes = (logits + eps > 0) & (logits + eps >= top - eps)
    return labels, np.concatenate([(top - eps <= 0)[None], classes])


def option_index(labels: np.ndarray, class_ids) -> np.ndarray:
    """Label map → index into :func:`possible_labels`' options (0 background, i + 1 class i)."""
    lut = np.full(int(max(np.max(class_ids), np.max(labels))) + 1, -1)
    lut[0] = 0
    lut[np.asarray(class_ids)] = np.arange(1, len(class_ids) + 1)
    index = lut[np.asarray(labels)]
    assert (index >= 0).all(), f"labels {np.unique(labels[index < 0])} were not asked for"
    return index


def assert_labels_possible(got: np.ndarray, class_ids, options: np.ndarray,
                           min_decided: float = 0.99) -> int:
    """Every pixel of ``got`` holds a label :func:`possible_labels` allows there (the reference
    label wherever it is decided), and at least ``min_decided`` of the pixels are decided, so
    the comparison is nearly exact. Returns the number of undecided pixels."""
    assert got.shape == options.shape[1:], (got.shape, options.shape)
    decided = options.sum(0) == 1
    assert decided.mean() >= min_decided, f"only {decided.mean():.4f} of the pixels decided"
    allowed = np.take_along_axis(options, option_index(got, class_ids)[None], 0)[0]
    wrong = np.argwhere(~allowed)
    assert not len(wrong), f"{len(wrong)} pixels hold a label the reference rules out, first " \
                           f"at {wrong[:5].tolist()}"
    return int((~decided).sum())


def candidate_masks(reference: np.ndarray, certain: np.ndarray, open_: np.ndarray,
                    max_open: int = 16):
    """Every mask of one class the reference allows: the ``certain`` voxels plus any subset of
    the ``open_`` ones; the ``reference`` mask first, then those differing from it in 1, 2, ...
    open voxels (rounding flips few, so a match comes early). At most ``max_open`` open voxels
    (2^max_open masks)."""
    where = np.argwhere(open_)
    assert len(where) <= max_open, f"{len(where)} voxels open to rounding: too many to enumerate"
    base = np.asarray(reference, bool) | certain
    for k in range(len(where) + 1):
        for flips in itertools.combinations(range(len(where)), k):
            mask = base.copy()
            index = tuple(where[list(flips)].T)
            mask[index] = ~mask[index]
            yield mask

