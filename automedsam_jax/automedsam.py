"""AutoMedSAM: segment an organ from its class id alone (SPEC §1).

A SAM-family backbone — frozen image encoder, frozen SAM prompt encoder (positional encoding and
distillation teacher), trained mask decoder — with the trained diffusion
:class:`~automedsam_jax.modeling.class_prompt_encoder.ClassPromptEncoder` in place of box prompts.

Frames: images ``(B, S, S, 3)`` in the preset's input frame (already preprocessed, see
:mod:`automedsam_jax.preprocess`); image embeddings ``(B, g, g, C)``; masks are low-res-frame logits
``(B, 4g, 4g)`` (256×256 at full size) — :func:`automedsam_jax.preprocess.postprocess_masks` takes
them to the original image. Class ids are ints 1..K; 0 is background in label maps.

    model = AutoMedSAM.from_pretrained("work/litemedsam")          # a converted MedSAM/LiteMedSAM
    out = model(images, class_ids)                                  # training / one class each
    emb = model.embed(images); out = model.decode(emb, class_ids)   # cached embeddings
    labels, probs = model.segment_all(image, num_classes=5)         # one image, every class
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from .checkpoint import load_model
from .config import AutoMedSamConfig, ClassPromptConfig
from .modeling import Sam, build_sam
from .modeling.class_prompt_encoder import ClassPromptEncoder, init_class_prompt_encoder


class AutoMedSamOutput(NamedTuple):
    """low_res_logits ``(B, 4g, 4g)``; iou ``(B,)``; the class prompt encoder's sparse ``(B, 2, C)``
    and dense ``(B, g, g, C)`` embeddings (None for a disabled branch) for the distillation loss."""

    low_res_logits: jax.Array
    iou: jax.Array
    sparse: jax.Array | None
    dense: jax.Array | None


class AutoMedSAM(nnx.Module):
    """``image_encoder``, ``prompt_encoder``, ``mask_decoder`` (SAM's names) and
    ``class_prompt_encoder`` (``class_prmpt_encoder`` in the authors' checkpoints)."""

    def __init__(self, cfg: AutoMedSamConfig, sam: Sam, class_prompt_encoder: ClassPromptEncoder):
        """Take over ``sam``'s three parts (pretrained weights) and add ``class_prompt_encoder``."""
        if sam.config != cfg.sam:
            raise ValueError(f"backbone {sam.config.name!r} does not match config {cfg.sam.name!r}")
        self.config = cfg
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.class_prompt_encoder = class_prompt_encoder

    @classmethod
    def from_sam(cls, sam: Sam, class_prompt: ClassPromptConfig = ClassPromptConfig(),
                 seed: int = 0) -> "AutoMedSAM":
        """``sam``'s weights + a fresh class prompt encoder (PyTorch's default init)."""
        cfg = AutoMedSamConfig(sam.config, class_prompt)
        return cls(cfg, sam, init_class_prompt_encoder(
            class_prompt, cfg.sam.decoder.transformer_dim, cfg.sam.embedding_size, seed))

    @classmethod
    def from_pretrained(cls, directory: str | Path,
                        class_prompt: ClassPromptConfig = ClassPromptConfig(),
                        seed: int = 0) -> "AutoMedSAM":
        """From a converted MedSAM/LiteMedSAM directory (``python -m convert``)."""
        return cls.from_sam(load_model(directory), class_prompt, seed)

    @classmethod
    def abstract(cls, cfg: AutoMedSamConfig) -> "AutoMedSAM":
        """A shape-only model (no FLOPs, no memory), to be filled from a checkpoint."""
        def build():
            rngs = nnx.Rngs(0)
            return cls(cfg, Sam(cfg.sam, rngs=rngs), ClassPromptEncoder(
                cfg.class_prompt, cfg.sam.decoder.transformer_dim, cfg.sam.embedding_size,
                rngs=rngs))
        return nnx.eval_shape(build)

    # -- parts ------------------------------------------------------------------------------
    def embed(self, images: jax.Array) -> jax.Array:
        """``(B, S, S, 3)`` input-frame images → ``(B, g, g, C)`` embeddings (frozen encoder)."""
        return self.image_encoder(images)

    def teacher(self, boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Box-prompted MedSAM's embeddings for ``(B, 4)`` input-frame boxes: sparse
        ``(B, 2, C)`` and dense ``no_mask_embed`` ``(B, g, g, C)``, without gradient."""
        sparse, dense = self.prompt_encoder(boxes=boxes)
        return jax.lax.stop_gradient(sparse), jax.lax.stop_gradient(dense)

    def prompts(self, embeddings: jax.Array, class_ids: jax.Array, *,
                key: jax.Array | None = None, noise: jax.Array | None = None):
        """Class prompt encoder on ``(B, g, g, C)`` embeddings for ``(B,)`` class ids; see
        :meth:`ClassPromptEncoder.__call__` for ``key``/``noise``."""
        return self.class_prompt_encoder(embeddings, class_ids, key=key, noise=noise)

    def decode(self, embeddings: jax.Array, class_ids: jax.Array, *,
               key: jax.Array | None = None, noise: jax.Array | None = None) -> AutoMedSamOutput:
        """``(B, g, g, C)`` embeddings (cached or fresh) + ``(B,)`` class ids → masks and IoU."""
        sparse, dense = self.prompts(embeddings, class_ids, key=key, noise=noise)
        low, iou = self._masks(embeddings, sparse, dense, class_ids.shape[0])
        return AutoMedSamOutput(low, iou, sparse, dense)

    def _masks(self, embeddings, sparse, dense, n: int) -> tuple[jax.Array, jax.Array]:
        """Mask decoder on ``(n or 1, g, g, C)`` embeddings for n prompt sets; a disabled branch
        (None) gets MedSAM's no-prompt embedding. → logits ``(n, 4g, 4g)``, IoU ``(n,)``."""
        no_sparse, no_dense = self.prompt_encoder()
        if sparse is None:
            sparse = jnp.broadcast_to(no_sparse, (n, *no_sparse.shape[1:]))
        if dense is None:
            dense = jnp.broadcast_to(no_dense, (n, *no_dense.shape[1:]))
        low, iou = self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                     multimask_output=False)
        return low[:, 0], iou[:, 0]

    def __call__(self, images: jax.Array, class_ids: jax.Array, *,
                 key: jax.Array | None = None, noise: jax.Array | None = None) -> AutoMedSamOutput:
        """``(B, S, S, 3)`` input-frame images, one class id each → :class:`AutoMedSamOutput`."""
        return self.decode(self.embed(images), class_ids, key=key, noise=noise)

    def segment_all(self, image: jax.Array, num_classes: int, *,
                    key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """One ``(1, S, S, 3)`` image, classes 1..K at once: embedded once, then
        :meth:`segment_embedding`."""
        return self.segment_embedding(self.embed(image), num_classes, key=key)

    def segment_embedding(self, embedding: jax.Array, num_classes: int, *,
                          key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Classes 1..K on one ``(1, g, g, C)`` embedding: the K class prompts are decoded as a
        batch against that single embedding.

        Returns the low-res label map ``(4g, 4g)`` int32 (see :func:`label_map`) and the class
        probabilities ``(K, 4g, 4g)``.
        """
        ids = jnp.arange(1, num_classes + 1, dtype=jnp.int32)
        sparse, dense = self.prompts(
            jnp.broadcast_to(embedding, (num_classes, *embedding.shape[1:])), ids, key=key)
        low, _ = self._masks(embedding, sparse, dense, num_classes)
        probs = jax.nn.sigmoid(low)
        return label_map(probs), probs


def label_map(probs: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Per-class probabilities ``(..., K, H, W)`` → labels ``(..., H, W)`` int32: the class
    (1..K) of highest probability, 0 where none exceeds ``threshold``. Ties go to the lower id."""
    best = jnp.argmax(probs, axis=-3)
    return jnp.where(jnp.max(probs, axis=-3) > threshold, best + 1, 0).astype(jnp.int32)


def build_automedsam(cfg: AutoMedSamConfig, seed: int = 0) -> AutoMedSAM:
    """Everything randomly initialised (tests; training starts from :meth:`from_pretrained`)."""
    return AutoMedSAM.from_sam(build_sam(cfg.sam, seed), cfg.class_prompt, seed)
