"""Helpers for the AutoMedSAM tests: randomised PyTorch references and the explicit noise that
makes the literal T-step diffusion loop (PyTorch) comparable with the closed form (JAX)."""

from __future__ import annotations

import numpy as np

from automedsam_jax.core.config import AutoMedSamConfig


def randomized_torch_automedsam(cfg: AutoMedSamConfig, seed: int = 0):
    """PyTorch AutoMedSAM: SAM parts from ``randomized_torch_sam``; the class prompt encoder
    keeps PyTorch's default init (every weight and bias already distinct and non-zero)."""
    import torch

    from .torch_automedsam import build_torch_automedsam
    from .torch_reference import randomized_torch_sam

    torch.manual_seed(seed)
    return build_torch_automedsam(cfg, randomized_torch_sam(cfg.sam, seed))


def step_noise(timesteps: int, shape_nchw: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """T standard-normal draws ``(T, B, C, g, g)`` for the PyTorch loop (used at t = T…1)."""
    return np.random.RandomState(seed).randn(timesteps, *shape_nchw).astype(np.float32)


def closed_form_noise(eps: np.ndarray) -> np.ndarray:
    """The single standard-normal ε (NHWC) with s·ε = Σ_t ε_t/(t+1) for the draws of
    :func:`step_noise` — computed here in float64 NumPy, independently of the JAX code."""
    T = eps.shape[0]
    w = 1.0 / (np.arange(T, 0, -1, dtype=np.float64) + 1.0)  # draw i is used at t = T − i
    total = np.einsum("t,tbchw->bhwc", w, eps.astype(np.float64))
    return (total / np.sqrt(np.sum(w ** 2))).astype(np.float32)
