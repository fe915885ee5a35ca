"""PyTorch AutoMedSAM as the authors wrote it (``class_prompt.py``, ``AutoMedSAM.py``), with the
defects docs/method.md#differences-from-the-authors-code lists fixed — the reference for
parity tests and the target of ``to_torch``.

Fixed: the caller no longer swaps sparse/dense; it calls ``class_prmpt_encoder`` (their forward
called a non-existent ``diffusion_model``); the sparse tokens are reshaped, not ``.squeeze()``d, so
batch size 1 works; the label is cast to float before it is concatenated. Widths, the grid,
``diffusion`` and ``branches`` follow a :class:`ClassPromptConfig` (a disabled branch is not built).

The forward diffusion is the literal T-step loop; ``noise`` may pass its T draws explicitly.
Names and the checkpoint layout (``class_prmpt_encoder.*``) are the authors'. Needs torch.
"""

from __future__ import annotations

import torch
from torch import nn

from automedsam_jax.core.config import AutoMedSamConfig, ClassPromptConfig
from .torch_models import build_torch_sam


def _double_conv(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, cfg: ClassPromptConfig, in_channels: int, out_channels: int):
        super().__init__()
        w1, w2, w3 = cfg.widths
        self.cfg = cfg
        self.enc1 = _double_conv(in_channels, w1, w1)
        self.enc2 = _double_conv(w1, w2, w2)
        self.middle = _double_conv(w2, w3, w2)
        if cfg.has_dense:
            self.dense_attention = nn.Conv2d(w2 + 1, w2, kernel_size=1)
            self.dense_dec1 = _double_conv(2 * w2, w2, w1)
            self.dense_dec2 = _double_conv(2 * w1, w1, out_channels)
        if cfg.has_sparse:
            self.sparse_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                  nn.Conv2d(w2 + 1, w2, kernel_size=1),
                                                  nn.Sigmoid())
            self.sparse_dec1 = _double_conv(2 * w2, w2, w1)
            self.sparse_dec2 = _double_conv(2 * w1, w1, out_channels)

    def forward(self, x, label):
        enc1_out = self.enc1(x)
        enc2_out = self.enc2(enc1_out)
        middle_out = self.middle(enc2_out)
        label_map = label.float().view(-1, 1, 1, 1).expand(-1, -1, *middle_out.shape[2:])
        middle_label = torch.cat([middle_out, label_map], dim=1)
        dense = sparse = None
        if self.cfg.has_dense:
            att = self.dense_attention(middle_label)
            d1 = self.dense_dec1(torch.cat([middle_out * att, enc2_out], dim=1))
            dense = self.dense_dec2(torch.cat([d1, enc1_out], dim=1))
        if self.cfg.has_sparse:
            att = self.sparse_attention(middle_label)
            s1 = self.sparse_dec1(torch.cat([middle_out * att, enc2_out], dim=1))
            sparse = self.sparse_dec2(torch.cat([s1, enc1_out], dim=1))
        return dense, sparse


class DiffusionModel(nn.Module):
    """The class prompt encoder: returns (sparse (B, 2, C), dense (B, C, g, g)), None if off."""

    def __init__(self, cfg: ClassPromptConfig, embedding_channels: int, grid: int):
        super().__init__()
        self.cfg = cfg
        self.timesteps = cfg.timesteps
        self.unet = UNet(cfg, embedding_channels + 1, embedding_channels)
        self.fc_label = nn.Linear(1, grid * grid)
        self.sparse_out = nn.AdaptiveAvgPool2d((2, 1))

    def label_proj(self, x, label):
        proj = self.fc_label(label.float().view(-1, 1))
        return proj.view(proj.size(0), 1, x.size(2), x.size(3))

    def forward(self, embedding, label, noise=None):
        """noise: T draws ``(T, B, C, g, g)`` used at t = T…1 in turn, or None for randn."""
        label_proj = self.label_proj(embedding, label)
        x = embedding
        if self.cfg.diffusion:
            for i, t in enumerate(range(self.timesteps, 0, -1)):
                eps = torch.randn_like(x) if noise is None else noise[i]
                x = x + eps * (1 / (t + 1)) + label_proj
        dense, sparse = self.unet(torch.cat([x, label_proj], dim=1), label)
        if sparse is not None:
            sparse = self.sparse_out(sparse).flatten(2).permute(0, 2, 1)
        return sparse, dense


class AutoMedSAM(nn.Module):
    def __init__(self, image_encoder, mask_decoder, prompt_encoder, class_prmpt_encoder):
        super().__init__()
        self.image_encoder = image_encoder
        self.mask_decoder = mask_decoder
        self.prompt_encoder = prompt_encoder
        self.class_prmpt_encoder = class_prmpt_encoder

    def forward(self, image, label, noise=None):
        """One class per image → low-res logits (B, 1, 4g, 4g) and IoU (B, 1)."""
        image_embedding = self.image_encoder(image)
        sparse, dense = self.class_prmpt_encoder(image_embedding, label, noise)
        if sparse is None or dense is None:
            no_sparse, no_dense = self.prompt_encoder(points=None, boxes=None, masks=None)
            n = image.shape[0]
            sparse = no_sparse.expand(n, -1, -1) if sparse is None else sparse
            dense = no_dense.expand(n, -1, -1, -1) if dense is None else dense
        return self.mask_decoder(image_embeddings=image_embedding,
                                 image_pe=self.prompt_encoder.get_dense_pe(),
                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                 multimask_output=False)


def build_torch_automedsam(cfg: AutoMedSamConfig, sam: nn.Module | None = None) -> AutoMedSAM:
    """An eval-mode PyTorch AutoMedSAM; the SAM parts come from ``sam`` (or a fresh
    ``build_torch_sam``)."""
    sam = build_torch_sam(cfg.sam) if sam is None else sam
    g = cfg.sam.embedding_size
    cpe = DiffusionModel(cfg.class_prompt, cfg.sam.decoder.transformer_dim, g)
    return AutoMedSAM(sam.image_encoder, sam.mask_decoder, sam.prompt_encoder, cpe).eval()
