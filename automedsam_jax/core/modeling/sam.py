"""The SAM-family model (SAM, MedSAM, LiteMedSAM): image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import jax
from flax import nnx

from ..config import SamConfig, ViTConfig
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT


class Sam(nnx.Module):
    """``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` under PyTorch's names.

    Inputs are in the input frame (``cfg.image_size`` px, NHWC, already preprocessed — see
    :mod:`automedsam_jax.core.preprocess` or :class:`automedsam_jax.inference.SamPredictor`).
    """

    def __init__(self, cfg: SamConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        enc = cfg.encoder
        self.image_encoder = (ImageEncoderViT(enc, rngs=rngs) if isinstance(enc, ViTConfig)
                              else TinyViT(enc, rngs=rngs))
        self.prompt_encoder = PromptEncoder(cfg.decoder, cfg.embedding_size, cfg.image_size,
                                            rngs=rngs)
        self.mask_decoder = MaskDecoder(cfg.decoder, rngs=rngs)

    def decode(self, image_embeddings: jax.Array, points=None, boxes=None, masks=None,
               multimask_output: bool = False) -> tuple[jax.Array, jax.Array]:
        """Prompts (input-frame pixels) against ``(B or 1, g, g, C)`` embeddings → low-res logits
        ``(B, M, 4g, 4g)`` and IoU ``(B, M)``."""
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse,
                                 dense, multimask_output)

    def __call__(self, images: jax.Array, points=None, boxes=None, masks=None,
                 multimask_output: bool = False) -> tuple[jax.Array, jax.Array]:
        """``(B, S, S, 3)`` input-frame images with one prompt set each → low-res logits, IoU."""
        return self.decode(self.image_encoder(images), points, boxes, masks, multimask_output)
