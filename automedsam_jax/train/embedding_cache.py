"""Cached image embeddings: the encoder is frozen, so each training slice is embedded once per
flip variant the pipeline can produce (none, horizontal, vertical, both), then training reads
the cache instead of running the encoder. The cached images are made exactly as the training
transform makes them (flip in the original frame, then ``preprocess_image``)."""

from __future__ import annotations

import time

import numpy as np

from ..data.sample import flip
from ..preprocess import preprocess_image

FLIP_VARIANTS = ((False, False), (True, False), (False, True), (True, True))


class EmbeddingCache:
    """``lookup(batch)`` → ``(B, g, g, C)`` float32 for the batch's (case, slice, flips)."""

    def __init__(self, index: dict, embeddings: np.ndarray):
        self.index, self.embeddings = index, embeddings

    @classmethod
    def build(cls, source, frame, embed_images, flips: bool = True, chunk: int = 8,
              log=print) -> "EmbeddingCache":
        """``embed_images((n, S, S, 3)) -> (n, g, g, C)``; ``chunk`` images per call."""
        variants = FLIP_VARIANTS if flips else FLIP_VARIANTS[:1]
        index, images, out = {}, [], []
        t0 = time.time()
        for i in range(len(source)):
            r = source[i]
            case = r["case_id"].decode() if isinstance(r["case_id"], bytes) else str(r["case_id"])
            for hf, vf in variants:
                index[(case, int(r["slice_index"]), hf, vf)] = len(images)
                images.append(preprocess_image(flip(r["image"], hf, vf), frame)[0])
        for s in range(0, len(images), chunk):
            part = np.stack(images[s:s + chunk])
            n = len(part)
            if n < chunk:
                part = np.concatenate([part, np.zeros((chunk - n, *part.shape[1:]), part.dtype)])
            out.append(np.asarray(embed_images(part))[:n])
        emb = np.concatenate(out)
        log(f"embedding cache: {len(images)} images ({len(source)} slices × {len(variants)} flip "
            f"variants), {emb.nbytes / 2**20:.0f} MiB, {time.time() - t0:.1f} s")
        return cls(index, emb)

    def lookup(self, batch: dict) -> np.ndarray:
        rows = [self.index[(str(c), int(s), bool(f[0]), bool(f[1]))] for c, s, f in
                zip(batch["case_id"], batch["slice_index"], batch["flips"])]
        return self.embeddings[rows]
