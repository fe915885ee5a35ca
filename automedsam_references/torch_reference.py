"""Helpers for the parity tests: randomised PyTorch reference models and comparisons."""

from __future__ import annotations

import numpy as np

from automedsam_jax.core.config import SamConfig


def randomized_torch_sam(cfg: SamConfig, seed: int = 0):
    """``build_torch_sam(cfg)`` with every float tensor drawn at random.

    PyTorch's own init leaves biases, rel-pos tables, attention biases and BatchNorm statistics at
    0 or 1, which would hide a mis-mapped tensor; here each one gets distinct values (norm scales
    around 1, running variances in [0.5, 1.5], weights small enough to keep activations O(1)).
    """
    import torch

    from .torch_models import build_torch_sam

    model = build_torch_sam(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                t.copy_(torch.randint(0, 1000, t.shape, generator=gen))
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif "norm" in name.split(".")[-2] or name.endswith(("bn.weight",)) or (
                    t.ndim == 1 and name.endswith("weight")):
                t.copy_(1.0 + 0.1 * noise)
            elif name.endswith("positional_encoding_gaussian_matrix"):
                t.copy_(noise)
            else:
                fan_in = int(np.prod(t.shape[1:])) if t.ndim > 1 else 1
                t.copy_(noise * (fan_in ** -0.5 if t.ndim > 1 else 0.1))
    return model.eval()


def rel_err(a, b) -> float:
    """‖a − b‖ / ‖b‖ in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def nchw(x: np.ndarray):
    """NHWC numpy → NCHW torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t) -> np.ndarray:
    """NCHW torch tensor → NHWC numpy."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def torch_box_forward(tm, images: np.ndarray, boxes: np.ndarray):
    """PyTorch SAM-family forward: NHWC images, ``(B, 4)`` boxes → NHWC embedding, low-res
    logits ``(B, 1, L, L)`` and IoU ``(B, 1)``, as NumPy."""
    import torch

    with torch.no_grad():
        emb = tm.image_encoder(nchw(images))
        sparse, dense = tm.prompt_encoder(points=None, boxes=torch.from_numpy(boxes), masks=None)
        low, iou = tm.mask_decoder(emb, tm.prompt_encoder.get_dense_pe(), sparse, dense, False)
    return nhwc(emb), low.numpy(), iou.numpy()


def jax_box_forward(jm, images: np.ndarray, boxes: np.ndarray):
    """The same through the Flax model, jitted: embedding, low-res logits, IoU."""
    import jax

    emb = jax.jit(lambda m, x: m.image_encoder(x))(jm, images)
    low, iou = jax.jit(lambda m, e, b: m.decode(e, boxes=b))(jm, emb, boxes)
    return emb, low, iou
