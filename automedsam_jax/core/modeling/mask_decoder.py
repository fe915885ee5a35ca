"""SAM's mask decoder in Flax NNX: image embedding + prompt embeddings → mask logits and IoU.

Masks come out in the low-res frame ``(B, M, 4g, 4g)`` (256×256 at full size), channels-first
over masks because they are not a feature map; everything inside is NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .. import backend
from ..config import DecoderConfig
from .common import GELU, Sequential, conv_transpose_2x2, layer_norm_2d, linear
from .transformer import TwoWayTransformer


class MLP(nnx.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 *, rngs: nnx.Rngs):
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List([linear(n, k, rngs=rngs) for n, k in zip(dims_in, dims_out)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


class MaskDecoder(nnx.Module):
    """Two-way transformer over [IoU token, mask tokens, prompt tokens] and the image, then the
    hypernetwork product with the 4× upscaled image tokens."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        dim = cfg.transformer_dim
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(cfg, rngs=rngs)
        self.iou_token = nnx.Embed(1, dim, rngs=rngs)
        self.mask_tokens = nnx.Embed(self.num_mask_tokens, dim, rngs=rngs)
        self.output_upscaling = Sequential([
            conv_transpose_2x2(dim, dim // 4, rngs=rngs), layer_norm_2d(dim // 4, rngs=rngs),
            GELU(), conv_transpose_2x2(dim // 4, dim // 8, rngs=rngs), GELU(),
        ])
        self.output_hypernetworks_mlps = nnx.List([
            MLP(dim, dim, dim // 8, 3, rngs=rngs) for _ in range(self.num_mask_tokens)])
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens,
                                       cfg.iou_head_depth, rngs=rngs)

    def __call__(self, image_embeddings: jax.Array, image_pe: jax.Array,
                 sparse_prompt_embeddings: jax.Array, dense_prompt_embeddings: jax.Array,
                 multimask_output: bool = False) -> tuple[jax.Array, jax.Array]:
        """Decode masks.

        Args:
          image_embeddings: ``(B, g, g, C)``, or ``(1, g, g, C)`` shared by all B prompt sets.
          image_pe: ``(1, g, g, C)`` dense positional encoding.
          sparse_prompt_embeddings: ``(B, N, C)``; dense_prompt_embeddings: ``(B, g, g, C)``.
          multimask_output: the 3 disambiguation masks if True, else mask 0 alone.

        Returns:
          low-res mask logits ``(B, M, 4g, 4g)`` and IoU predictions ``(B, M)``, M = 3 or 1.
        """
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe,
                                             sparse_prompt_embeddings, dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings,
                      dense_prompt_embeddings):
        B = sparse_prompt_embeddings.shape[0]
        output_tokens = jnp.concatenate([self.iou_token.embedding[...],
                                         self.mask_tokens.embedding[...]], axis=0)
        output_tokens = jnp.broadcast_to(output_tokens, (B, *output_tokens.shape))
        tokens = jnp.concatenate([output_tokens, sparse_prompt_embeddings.astype(output_tokens.dtype)],
                                 axis=1)
        if image_embeddings.shape[0] not in (1, B):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {B} prompt sets: "
                             "pass one embedding per prompt set, or a single shared one")
        src = image_embeddings + dense_prompt_embeddings
        g, C = src.shape[1], src.shape[-1]
        pos_src = jnp.broadcast_to(image_pe.astype(src.dtype), (B, *image_pe.shape[1:]))
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(src.reshape(B, g, g, C))  # (B, 4g, 4g, C/8)
        hyper_in = jnp.stack([mlp(mask_tokens_out[:, i])
                              for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1)
        masks = backend.dot("bmc,bhwc->bmhw", hyper_in, upscaled)
        return masks, self.iou_prediction_head(iou_token_out)
