"""Cached image embeddings: the encoder is frozen, so each training slice is embedded once per
variant the pipeline can produce — flips (none, horizontal, vertical, both) × augmented
variants (:mod:`automedsam_jax.data.augment`, variant 0 = the stored slice) — then training
reads the cache instead of running the encoder. The cached images are made exactly as the
training transform makes them (augment, then flip in the original frame, then
``preprocess_image``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np

from ..core.preprocess import preprocess_image
from ..data.augment import AugmentConfig, augment_slice
from ..data.sample import flip

FLIP_VARIANTS = ((False, False), (True, False), (False, True), (True, True))


class EmbeddingCache:
    """``lookup(batch)`` → ``(B, g, g, C)`` float32 for the batch's (case, slice, flips,
    variant)."""

    def __init__(self, index: dict, embeddings: np.ndarray):
        self.index, self.embeddings = index, embeddings

    @classmethod
    def build(cls, source, frame, embed_images: Callable[[np.ndarray], np.ndarray],
              flips: bool = True, chunk: int = 8, log=print,
              augment: AugmentConfig = AugmentConfig(), seed: int = 0) -> "EmbeddingCache":
        """``embed_images((chunk, S, S, 3)) -> (chunk, g, g, C)``; the images are made ``chunk``
        at a time (the last chunk zero-padded), so only the embeddings are held in memory.
        ``augment`` and ``seed`` must be the training pipeline's."""
        flip_variants = FLIP_VARIANTS if flips else FLIP_VARIANTS[:1]
        index, out = {}, []
        t0 = time.time()

        def images() -> Iterator[np.ndarray]:
            for i in range(len(source)):
                r = source[i]
                case = r["case_id"].decode() if isinstance(r["case_id"], bytes) else str(r["case_id"])
                z = int(r["slice_index"])
                for v in range(augment.variants + 1):
                    image = augment_slice(r["image"], r["label"], augment, seed, case, z, v)[0]
                    for hf, vf in flip_variants:
                        index[(case, z, hf, vf, v)] = len(index)
                        yield preprocess_image(flip(image, hf, vf), frame)[0]

        part = []
        for image in images():
            part.append(image)
            if len(part) == chunk:
                out.append(np.asarray(embed_images(np.stack(part))))
                part = []
        if part:
            n = len(part)
            part += [np.zeros_like(part[0])] * (chunk - n)
            out.append(np.asarray(embed_images(np.stack(part)))[:n])
        emb = np.concatenate(out)
        log(f"embedding cache: {len(emb)} images ({len(source)} slices × {len(flip_variants)} "
            f"flip × {augment.variants + 1} augmentation variants), {emb.nbytes / 2**20:.0f} MiB, "
            f"{time.time() - t0:.1f} s")
        return cls(index, emb)

    def lookup(self, batch: dict) -> np.ndarray:
        variants = batch.get("variant", np.zeros(len(batch["case_id"]), np.int32))
        rows = [self.index[(str(c), int(s), bool(f[0]), bool(f[1]), int(v))] for c, s, f, v in
                zip(batch["case_id"], batch["slice_index"], batch["flips"], variants)]
        return self.embeddings[rows]
