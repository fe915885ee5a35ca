"""The localisation head (beyond the paper): where each class is, at the embedding grid.

A light head on the frozen image embedding ``(B, g, g, C)`` NHWC gives per-pixel logits
``(B, g, g, K + 1)`` over background (channel 0) and classes 1..K (64×64 cells at full size,
each ``S / g`` input-frame pixels wide). A class's prompt is read off the map on the host
(:func:`map_boxes`): the largest 4-connected component of the cells where that class wins the
argmax, its bounding box in input-frame pixels (+ ``margin`` cells per side, clipped to the
image), and the component's area as a fraction of the image — the presence score. The box goes
through the backbone's own prompt encoder to its decoder (:meth:`AutoMedSAM.box_masks`), so a
frozen MedSAM/LiteMedSAM draws the organ as it does from a manual box.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from scipy import ndimage

from ..config import LocaliserConfig
from .common import GELU, conv2d


def grid_extent(extent: tuple[int, int], input_size: int, grid: int) -> tuple[int, int]:
    """The image's ``(h, w)`` input-frame extent in cells of a ``grid × grid`` map over the
    ``input_size`` frame (rounded, at least 1): the part of the map that is not padding."""
    return tuple(max(1, round(e * grid / input_size)) for e in extent)


class Localiser(nnx.Module):
    """``head="conv"``: ``conv1`` 3×3 C→w, GELU, ``conv2`` 3×3 w→w, GELU, ``classifier`` 1×1
    w→K+1 (``width`` 0: the classifier alone on the embedding, a linear probe).
    ``head="multiscale"``: ``reduce`` 1×1 C→w, GELU; ``fine`` 3×3 at the grid; ``mid1``,
    ``mid2`` 3×3 on its 2×2 average pool; ``coarse1``, ``coarse2`` 3×3 on a further 2×2 pool;
    the three upsampled (nearest) and summed, ``mix`` 3×3, ``classifier`` 1×1 — GELU after every
    convolution but the classifier. Zero padding at the borders. ``normalise``: the embedding
    is first standardised per image and channel over the grid (:func:`standardise`)."""

    def __init__(self, cfg: LocaliserConfig, embed_dim: int, *, rngs: nnx.Rngs):
        cfg.check()
        self.config = cfg
        w = cfg.width
        if cfg.head == "multiscale":
            self.reduce = conv2d(embed_dim, w, 1, rngs=rngs)
            for name in ("fine", "mid1", "mid2", "coarse1", "coarse2", "mix"):
                setattr(self, name, conv2d(w, w, 3, padding=1, rngs=rngs))
        elif w:
            self.conv1 = conv2d(embed_dim, w, 3, padding=1, rngs=rngs)
            self.conv2 = conv2d(w, w, 3, padding=1, rngs=rngs)
        if w:
            self.act = GELU()
        self.classifier = conv2d(w or embed_dim, cfg.num_classes + 1, 1, rngs=rngs)

    def __call__(self, embeddings: jax.Array) -> jax.Array:
        """``(B, g, g, C)`` embeddings → ``(B, g, g, K + 1)`` logits (0 = background)."""
        x, act = embeddings, getattr(self, "act", None)
        if self.config.normalise:
            x = standardise(x)
        if self.config.head == "multiscale":
            x = act(self.reduce(x))
            mid = _pool(x)
            coarse = _pool(mid)
            mid = act(self.mid2(act(self.mid1(mid))))
            coarse = act(self.coarse2(act(self.coarse1(coarse))))
            x = act(self.fine(x)) + _upsample(mid, x.shape) + _upsample(coarse, x.shape)
            x = act(self.mix(x))
        elif self.config.width:
            x = act(self.conv2(act(self.conv1(x))))
        return self.classifier(x)


def standardise(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``(B, H, W, C)`` → each (image, channel) at zero mean and unit variance over H × W."""
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) / (x.std(axis=(1, 2), keepdims=True) + eps)


def _pool(x: jax.Array) -> jax.Array:
    """2×2 average pooling of ``(B, H, W, C)`` (an odd side keeps its last row/column)."""
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")


def _upsample(x: jax.Array, shape) -> jax.Array:
    """Nearest-neighbour upsampling of ``(B, h, w, C)`` to ``shape``'s grid."""
    return jax.image.resize(x, (*x.shape[:1], *shape[1:3], x.shape[-1]), "nearest")


def map_boxes(logits: np.ndarray, class_ids: np.ndarray, extent: tuple[int, int],
              input_size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """One slice's map ``(g, g, K + 1)`` → box prompts ``(n, 4)`` float32 (``x0, y0, x1, y1``
    input-frame pixels) and presence areas ``(n,)`` for the ``n`` requested ``class_ids``.

    ``extent`` is the image's ``(h, w)`` in the input frame (the rest is padding, ignored).
    A class's cells are those where it has the highest logit; its box is the bounding box of
    their largest 4-connected component (ties: the first in scan order), moved out by
    ``margin`` cells per side and clipped to the extent; its area is the component's cell count
    over the image's cell count. A class that wins no cell gets a zero box and area 0.
    """
    g = logits.shape[0]
    cell = input_size / g
    hg, wg = grid_extent(extent, input_size, g)
    winner = np.asarray(logits[:hg, :wg]).argmax(axis=-1)
    boxes = np.zeros((len(class_ids), 4), np.float32)
    areas = np.zeros(len(class_ids), np.float32)
    for i, c in enumerate(class_ids):
        comps, n = ndimage.label(winner == c)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())[1:]
        rows, cols = np.nonzero(comps == 1 + int(np.argmax(sizes)))
        boxes[i] = [max((cols.min() - margin) * cell, 0.0), max((rows.min() - margin) * cell, 0.0),
                    min((cols.max() + 1 + margin) * cell, extent[1]),
                    min((rows.max() + 1 + margin) * cell, extent[0])]
        areas[i] = sizes.max() / (hg * wg)
    return boxes, areas
