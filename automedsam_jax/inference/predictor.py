"""``SamPredictor``: SAM's predictor interface for SAM, MedSAM and LiteMedSAM in JAX.

    predictor = SamPredictor.from_checkpoint("work/litemedsam")   # a converted model directory
    predictor.set_image(ct_slice)                 # (H, W) or (H, W, 3), uint8 or float
    masks, iou, low_res = predictor.predict(boxes=[[x0, y0, x1, y1]])
    # masks (1, 1, H, W) bool at the original size, iou (1, 1), low_res (1, 1, 256, 256) logits

Prompts are in *original-image pixels* (``x, y``); the predictor moves them to the model's input
frame and brings masks back with the preset's own pre/post-processing, so callers never handle
the 1024 / 256 px frames. The image encoder and the decoder are jitted once per input shape.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..core.automedsam import embed_images
from ..core.modeling import Sam
from ..core.preprocess import (Resized, boxes_to_input_frame, points_to_input_frame,
                              postprocess_masks, preprocess_image)
from ..io.checkpoint import load_model


def _decode(graphdef, state, embeddings, points, boxes, multimask_output):
    return nnx.merge(graphdef, state).decode(embeddings, points=points, boxes=boxes,
                                             multimask_output=multimask_output)


class SamPredictor:
    """Embed an image (or a batch) once, then decode any number of box/point prompts against it."""

    def __init__(self, model: Sam):
        if not isinstance(model, Sam):
            raise TypeError(f"SamPredictor takes a box/point-prompted Sam, not a "
                            f"{type(model).__name__} (AutoMedSAM is prompted by class ids)")
        self.model = model
        self.config = model.config
        self._graphdef, self._state = nnx.split(model)
        graphdef = self._graphdef
        self._encode = jax.jit(lambda state, images: embed_images(nnx.merge(graphdef, state),
                                                                  images))
        self._decode = jax.jit(partial(_decode, self._graphdef), static_argnums=(4,))
        self._post = jax.jit(postprocess_masks, static_argnums=(1, 2))
        self.features: jax.Array | None = None
        self.resized: list[Resized] = []
        self._batched = False

    @classmethod
    def from_checkpoint(cls, directory: str | Path) -> "SamPredictor":
        """Load a model directory written by ``python -m convert`` (or by training)."""
        return cls(load_model(directory))

    # -- images ------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """One image ``(H, W)`` or ``(H, W, 3)``, uint8 or float (see ``preprocess_image``)."""
        self.set_images([image])
        self._batched = False

    def set_images(self, images) -> None:
        """A batch: a list of images (sizes may differ) or an ``(N, H, W[, 3])`` array."""
        if len(images) == 0:
            raise ValueError("set_images needs at least one image")
        inputs, self.resized = [], []
        for im in images:
            x, r = preprocess_image(im, self.config.frame)
            inputs.append(x)
            self.resized.append(r)
        self.features = self._encode(self._state, jnp.asarray(np.stack(inputs)))
        self._batched = True

    def get_image_embedding(self) -> jax.Array:
        """The cached embedding ``(N, g, g, C)`` (NHWC; g = 64 at full size)."""
        if self.features is None:
            raise RuntimeError("call set_image or set_images first")
        return self.features

    # -- prompts -----------------------------------------------------------------------------
    def predict(self, boxes=None, point_coords=None, point_labels=None,
                multimask_output: bool = False, return_logits: bool = False):
        """Decode prompts in original-image pixels against the cached embedding(s).

        Single image (``set_image``): ``boxes`` ``(M, 4)`` as ``x0, y0, x1, y1``; ``point_coords``
        ``(M, P, 2)`` as ``x, y`` with ``point_labels`` ``(M, P)`` (1 foreground, 0 background).
        A single box ``(4,)`` or point set ``(P, 2)`` counts as M = 1. Batch (``set_images``,
        N images): the same with a leading N axis, M prompt sets per image.

        Returns ``masks ([N,] M, K, H, W)`` bool at the original size (logits if
        ``return_logits``), ``iou ([N,] M, K)`` and ``low_res ([N,] M, K, L, L)`` logits in the
        decoder frame, with K = 3 if ``multimask_output`` else 1.
        """
        feats = self.get_image_embedding()
        n = feats.shape[0]
        boxes, points = self._prompts(boxes, point_coords, point_labels, n)
        m = (boxes if boxes is not None else points[0]).shape[1]
        emb = jnp.repeat(feats, m, axis=0)  # one embedding per prompt set, image-major
        flat_boxes = None if boxes is None else jnp.asarray(boxes.reshape(n * m, 4))
        flat_points = None if points is None else (
            jnp.asarray(points[0].reshape(n * m, -1, 2)), jnp.asarray(points[1].reshape(n * m, -1)))
        low, iou = self._decode(self._state, emb, flat_points, flat_boxes, multimask_output)
        low = low.reshape(n, m, *low.shape[1:])
        iou = iou.reshape(n, m, -1)
        masks = [self._post(low[i], self.resized[i], self.config.frame) for i in range(n)]
        masks = [np.asarray(x if return_logits else x > 0) for x in masks]
        low, iou = np.asarray(low), np.asarray(iou)
        if not self._batched:
            return masks[0], iou[0], low[0]
        same = len({mk.shape for mk in masks}) == 1
        return (np.stack(masks) if same else masks), iou, low

    def _prompts(self, boxes, coords, labels, n):
        """Validate prompts and move them to the input frame: boxes (n, m, 4), points (n, m, P, 2)."""
        if boxes is None and coords is None:
            raise ValueError("give boxes and/or point_coords (with point_labels)")
        lead = (n,) if self._batched else ()
        if boxes is not None:
            boxes = np.asarray(boxes, np.float32)
            if boxes.shape == lead + (4,):
                boxes = boxes[..., None, :]
            if boxes.ndim != len(lead) + 2 or boxes.shape[-1] != 4:
                raise ValueError(f"boxes must have shape {lead + ('M', 4)}, got {boxes.shape}")
            boxes = boxes.reshape(n, -1, 4)
            boxes = np.stack([boxes_to_input_frame(b, r) for b, r in zip(boxes, self.resized)])
        points = None
        if coords is not None:
            if labels is None:
                raise ValueError("point_coords need point_labels (1 foreground, 0 background)")
            coords, labels = np.asarray(coords, np.float32), np.asarray(labels, np.int32)
            if coords.ndim == len(lead) + 2:
                coords, labels = coords[..., None, :, :], labels[..., None, :]
            if coords.ndim != len(lead) + 3 or coords.shape[-1] != 2 or coords.shape[:-1] != labels.shape:
                raise ValueError(f"point_coords must be {lead + ('M', 'P', 2)} with labels "
                                 f"{lead + ('M', 'P')}, got {coords.shape} and {labels.shape}")
            coords = coords.reshape(n, -1, coords.shape[-2], 2)
            coords = np.stack([points_to_input_frame(c, r) for c, r in zip(coords, self.resized)])
            points = (coords, labels.reshape(n, -1, labels.shape[-1]))
        if boxes is not None and points is not None and boxes.shape[1] != points[0].shape[1]:
            raise ValueError(f"{boxes.shape[1]} boxes but {points[0].shape[1]} point sets per image")
        return boxes, points
