"""The joint loss (docs/method.md#losses) against independent computations (PyTorch, MONAI,
NumPy, SciPy) and for its properties: non-negative, ~0 at a perfect prediction, finite gradients on
empty masks. PyTorch and MONAI (which runs on PyTorch) are used where the ``[torch]`` extra is
installed
(``requires_torch``); the NumPy references always run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from automedsam_jax.core.automedsam import AutoMedSamOutput
from automedsam_jax.core.config import LossConfig
from automedsam_jax.core.losses import (LossWeights, bce_loss, dice_loss, distillation_loss,
                                        joint_loss, shape_distance_loss, uncertainty_weighting)

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None

B, L, g, C = 3, 32, 4, 8


def _masks(seed=0):
    rs = np.random.RandomState(seed)
    mask = np.zeros((B, L, L), np.float32)
    for b in range(B - 1):                     # the last sample is empty
        y, x = rs.randint(2, L // 2, 2)
        mask[b, y:y + rs.randint(3, L // 2), x:x + rs.randint(3, L // 2)] = 1
    return mask


def _dist(mask):
    """The shape-distance map D (docs/method.md#shape-distance), from SciPy here (the pipeline
    has its own copy)."""
    out = np.zeros_like(mask)
    for b, m in enumerate(mask.astype(bool)):
        if m.any():
            out[b] = np.where(m, ndimage.distance_transform_edt(m),
                              ndimage.distance_transform_edt(~m)) / L
    return out


def _logits(seed=1):
    return (3 * np.random.RandomState(seed).randn(B, L, L)).astype(np.float32)


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.mark.requires_torch
def test_bce_matches_torch():
    x, m = _logits(), _masks()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(x),
                                                               torch.from_numpy(m))
    assert float(bce_loss(x, m)) == pytest.approx(float(ref), rel=1e-6)


def test_dice_matches_numpy():
    x, m = _logits(), _masks()
    p = _sigmoid(x)
    inter, den = (p * m).sum((1, 2)), (p ** 2).sum((1, 2)) + (m ** 2).sum((1, 2))
    ref = np.mean(1 - (2 * inter + 1e-5) / (den + 1e-5))
    assert float(dice_loss(x, m)) == pytest.approx(ref, rel=1e-5)


@pytest.mark.requires_torch
def test_dice_matches_monai():
    """MONAI's squared-denominator Dice with the same smoothing (a [test] dependency, but it
    runs on PyTorch)."""
    import monai.losses as monai
    x, m = _logits(), _masks()
    dl = monai.DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)
    ref_monai = dl(torch.from_numpy(x)[:, None], torch.from_numpy(m)[:, None])
    assert float(dice_loss(x, m)) == pytest.approx(float(ref_monai), rel=1e-5)


def test_shape_distance_matches_numpy():
    x, m = _logits(), _masks()
    d = _dist(m)
    ref = np.mean((_sigmoid(x) - m) ** 2 * d.astype(np.float64) ** 2)
    assert float(shape_distance_loss(x, m, d)) == pytest.approx(ref, rel=1e-5)


def test_distillation_matches_numpy_and_skips_disabled_branches():
    rs = np.random.RandomState(2)
    s, ts = rs.randn(2, B, 2, C).astype(np.float32)
    d, td = rs.randn(2, B, g, g, C).astype(np.float32)
    ref_s, ref_d = np.mean((s - ts) ** 2), np.mean((d - td) ** 2)
    assert float(distillation_loss(s, d, ts, td)) == pytest.approx(ref_s + ref_d, rel=1e-6)
    assert float(distillation_loss(None, d, ts, td)) == pytest.approx(ref_d, rel=1e-6)
    assert float(distillation_loss(s, None, ts, td)) == pytest.approx(ref_s, rel=1e-6)


def test_uncertainty_weighting_formula_floor_and_gradient():
    losses = np.array([0.3, 1.2, 0.05, 2.0])
    sigma = np.array([1.0, 0.5, 2.0, 1e-6])
    s2 = np.maximum(sigma ** 2, 1e-8)
    ref = np.sum(losses / (2 * s2) + np.log(1 + s2))
    got = uncertainty_weighting(jnp.asarray(losses, jnp.float32), jnp.asarray(sigma, jnp.float32))
    assert float(got) == pytest.approx(ref, rel=1e-5)
    # d/dσ [L/(2σ²) + log(1+σ²)] = −L/σ³ + 2σ/(1+σ²) above the floor
    grad = jax.grad(uncertainty_weighting, argnums=1)(jnp.asarray(losses[:3], jnp.float32),
                                                      jnp.asarray(sigma[:3], jnp.float32))
    s = sigma[:3]
    np.testing.assert_allclose(grad, -losses[:3] / s ** 3 + 2 * s / (1 + s ** 2), rtol=1e-5)


def _batch_and_output(logits, mask, seed=3):
    rs = np.random.RandomState(seed)
    teacher = (rs.randn(B, 2, C).astype(np.float32), rs.randn(B, g, g, C).astype(np.float32))
    out = AutoMedSamOutput(jnp.asarray(logits), jnp.zeros((B,)),
                           jnp.asarray(teacher[0] + 0.1), jnp.asarray(teacher[1] - 0.2))
    return out, {"mask": mask, "dist": _dist(mask)}, teacher


@pytest.mark.parametrize("weighting", ["uncertainty", "fixed"])
def test_joint_loss_total(weighting):
    x, m = _logits(), _masks()
    out, batch, teacher = _batch_and_output(x, m)
    cfg = LossConfig(weighting=weighting)
    total, terms = jax.jit(joint_loss)(out, batch, teacher, LossWeights(cfg))
    p = _sigmoid(x)
    inter, den = (p * m).sum((1, 2)), (p ** 2).sum((1, 2)) + (m ** 2).sum((1, 2))
    ref = {"mse": 0.1 ** 2 + 0.2 ** 2,
           "ce": np.mean(np.logaddexp(0, x) - x * m),
           "dice": np.mean(1 - (2 * inter + 1e-5) / (den + 1e-5)),
           "sd": np.mean((p - m) ** 2 * batch["dist"] ** 2)}
    for k in ref:
        assert float(terms[k]) == pytest.approx(ref[k], rel=1e-5), k
    # σ = 1: each term is L/2 + log 2
    expected = (sum(ref.values()) / 2 + 4 * np.log(2) if weighting == "uncertainty"
                else sum(ref.values()))
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_subset_of_terms():
    x, m = _logits(), _masks()
    out, batch, teacher = _batch_and_output(x, m)
    total, terms = joint_loss(out, batch, teacher, LossWeights(LossConfig(("ce", "dice"), "fixed")))
    assert set(terms) == {"ce", "dice"}
    assert float(total) == pytest.approx(float(bce_loss(x, m) + dice_loss(x, m)), rel=1e-6)
    with pytest.raises(ValueError):
        LossConfig(("ce", "focal"))


def test_non_negative_and_zero_at_a_perfect_prediction():
    m = _masks()
    d = _dist(m)
    for x in (_logits(s) for s in range(3)):
        assert float(bce_loss(x, m)) >= 0 and float(dice_loss(x, m)) >= 0
        assert float(shape_distance_loss(x, m, d)) >= 0
    perfect = np.where(m > 0, 30.0, -30.0).astype(np.float32)
    assert float(bce_loss(perfect, m)) < 1e-6
    assert float(dice_loss(perfect, m)) < 1e-6
    assert float(shape_distance_loss(perfect, m, d)) < 1e-12


def test_finite_gradients_on_empty_masks():
    empty = np.zeros((B, L, L), np.float32)
    out, batch, teacher = _batch_and_output(_logits(), empty)
    assert not batch["dist"].any()
    weights = LossWeights(LossConfig())

    def total(weights, logits):
        return joint_loss(out._replace(low_res_logits=logits), batch, teacher, weights)[0]

    gw, gl = nnx.grad(total, argnums=(0, 1))(weights, out.low_res_logits)
    gs = gw.sigma[...]
    assert np.isfinite(gl).all() and np.isfinite(gs).all() and np.abs(gl).sum() > 0
