"""The diffusion class prompt encoder (docs/method.md#class-prompt-encoder) against the
authors' PyTorch structure.

Reference: ``automedsam_references.torch_automedsam.DiffusionModel`` (the authors' code with the
defects of docs/method.md#differences-from-the-authors-code fixed), running the literal T-step loop
on explicit draws; JAX runs the closed form on the equivalent single ε
(``automedsam_reference.closed_form_noise``). Tolerance: relative error < 1e-5 in float32 (see
``test_parity_tiny``). The PyTorch comparisons need the ``[torch]`` extra (``requires_torch``); the
encoder's own properties are checked without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.core.config import TINY_CLASS_PROMPT, ClassPromptConfig
from automedsam_jax.core.modeling.class_prompt_encoder import (ClassPromptEncoder, diffuse,
                                                               diffuse_stepwise, diffusion_scale,
                                                               init_class_prompt_encoder,
                                                               pool_halves)
from automedsam_jax.io.conversion import load_state
from automedsam_references.automedsam_reference import closed_form_noise, step_noise
from automedsam_references.torch_reference import nchw, nhwc, rel_err

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None

TOL = 1e-5

# (config, embedding channels C, grid g, batch B): both branches at batch 1 and an odd grid
# (overlapping halves), each ablation.
CASES = {
    "both": (TINY_CLASS_PROMPT, 32, 6, 2),
    "both-b1-odd-grid": (TINY_CLASS_PROMPT, 16, 5, 1),
    "dense-only": (ClassPromptConfig((8, 16, 32), timesteps=7, branches="dense"), 16, 8, 2),
    "sparse-only-no-diffusion": (ClassPromptConfig((8, 16, 32), diffusion=False,
                                                   branches="sparse"), 16, 8, 2),
}


def _pair(cfg, C, g, seed=0):
    from automedsam_references.torch_automedsam import DiffusionModel
    torch.manual_seed(seed)
    tm = DiffusionModel(cfg, C, g).eval()
    jm = nnx.eval_shape(lambda: ClassPromptEncoder(cfg, C, g, rngs=nnx.Rngs(0)))
    load_state(jm, {k: v.numpy() for k, v in tm.state_dict().items()}, "torch")
    return tm, jm


@pytest.mark.requires_torch
@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_explicit_noise(case):
    cfg, C, g, B = CASES[case]
    tm, jm = _pair(cfg, C, g)
    rs = np.random.RandomState(1)
    emb = rs.randn(B, g, g, C).astype(np.float32)
    labels = np.arange(1, B + 1, dtype=np.int32) * 2
    eps = step_noise(cfg.timesteps, (B, C, g, g), seed=2)
    with torch.no_grad():
        t_sparse, t_dense = tm(nchw(emb), torch.from_numpy(labels), torch.from_numpy(eps))
    j_sparse, j_dense = jax.jit(lambda m, e, c, n: m(e, c, noise=n))(
        jm, emb, labels, closed_form_noise(eps))
    assert (j_sparse is None) == (t_sparse is None) == (not cfg.has_sparse)
    assert (j_dense is None) == (t_dense is None) == (not cfg.has_dense)
    if cfg.has_sparse:
        assert j_sparse.shape == (B, 2, C) == tuple(t_sparse.shape)
        assert rel_err(j_sparse, t_sparse.numpy()) < TOL
    if cfg.has_dense:
        assert j_dense.shape == (B, g, g, C)
        assert rel_err(j_dense, nhwc(t_dense)) < TOL


def test_attribute_names_are_the_authors():
    """The PyTorch names of the tensors include those of the authors' ``DiffusionModel`` (the
    parity test loads the PyTorch module's every tensor by these names)."""
    from automedsam_jax.io.conversion import table
    jm = init_class_prompt_encoder(TINY_CLASS_PROMPT, 16, 4)
    names = set(table(jm))
    for n in ["fc_label.weight", "unet.enc1.0.weight", "unet.enc2.2.bias", "unet.middle.2.weight",
              "unet.dense_attention.weight", "unet.dense_dec1.0.weight", "unet.dense_dec2.2.bias",
              "unet.sparse_attention.1.weight", "unet.sparse_dec1.2.weight",
              "unet.sparse_dec2.0.bias"]:
        assert n in names, n


def test_diffusion_scale_matches_the_series_limit():
    """s² = Σ_{k=2}^{T+1} 1/k² = ζ(2) − 1 − ψ'(T+2) (trigamma tail), 0.635 at T = 100."""
    from scipy.special import polygamma
    for T in (1, 7, 100):
        expected = np.pi ** 2 / 6 - 1 - polygamma(1, T + 2)
        assert diffusion_scale(T) ** 2 == pytest.approx(expected, rel=1e-12)
    assert diffusion_scale(100) ** 2 == pytest.approx(0.635, abs=5e-4)


@pytest.mark.slow
def test_stepwise_loop_has_the_closed_form_distribution():
    """The literal loop's x_T − F − T·P(c) is zero-mean with std s (1.6 M samples)."""
    T, shape = 100, (4, 32, 32, 384)
    rs = np.random.RandomState(0)
    emb = rs.randn(*shape).astype(np.float32)
    cmap = rs.randn(shape[0], 32, 32, 1).astype(np.float32)
    x = jax.jit(diffuse_stepwise, static_argnums=3)(emb, cmap, jax.random.key(0), T)
    resid = np.asarray(x, np.float64) - emb - T * cmap
    s = np.sqrt(sum(1 / (t + 1) ** 2 for t in range(1, T + 1)))
    assert abs(resid.mean()) < 5 * s / np.sqrt(resid.size)
    assert resid.std() == pytest.approx(s, rel=3e-3)
    # and the closed form with ε = 0 is the noise-free mean, computed in NumPy
    np.testing.assert_allclose(diffuse(emb, cmap, T, None), emb + T * cmap, rtol=1e-6, atol=1e-4)


@pytest.mark.slow
def test_noise_sources_and_determinism():
    cfg, C, g = TINY_CLASS_PROMPT, 16, 4
    jm = init_class_prompt_encoder(cfg, C, g)
    emb = np.random.RandomState(0).randn(2, g, g, C).astype(np.float32)
    ids = np.array([1, 2], np.int32)
    plain = jm(emb, ids)
    zero = jm(emb, ids, noise=np.zeros_like(emb))
    keyed = jm(emb, ids, key=jax.random.key(3))
    keyed2 = jm(emb, ids, key=jax.random.key(3))
    other = jm(emb, ids, key=jax.random.key(4))
    np.testing.assert_array_equal(plain[1], zero[1])      # no key: the noise-free mean
    np.testing.assert_array_equal(keyed[1], keyed2[1])    # fixed key: reproducible
    assert not np.allclose(keyed[1], other[1])            # and the key matters
    assert not np.allclose(keyed[1], plain[1])


def test_no_diffusion_ignores_noise():
    cfg = ClassPromptConfig((8, 16, 32), diffusion=False)
    jm = init_class_prompt_encoder(cfg, 16, 4)
    emb = np.random.RandomState(0).randn(1, 4, 4, 16).astype(np.float32)
    ids = np.array([3], np.int32)
    np.testing.assert_array_equal(jm(emb, ids)[0], jm(emb, ids, key=jax.random.key(1))[0])


@pytest.mark.requires_torch
@pytest.mark.parametrize("h", [4, 5, 64])
def test_pool_halves_matches_torch_adaptive_pool(h):
    x = np.random.RandomState(h).randn(2, h, 3, 7).astype(np.float32)
    ref = torch.nn.AdaptiveAvgPool2d((2, 1))(nchw(x)).flatten(2).permute(0, 2, 1).numpy()
    assert rel_err(pool_halves(jnp.asarray(x)), ref) < 1e-6


@pytest.mark.requires_torch
def test_fresh_init_follows_pytorch_default():
    """Every weight and bias lies in PyTorch's default U(±1/√fan_in) (fan_in from torch itself)
    and fills it (std ≈ bound/√3), as the authors' training started."""
    from automedsam_jax.io.conversion import to_torch_state
    from automedsam_references.torch_automedsam import DiffusionModel
    from automedsam_jax.core.modeling.class_prompt_encoder import init_class_prompt_encoder
    cfg = ClassPromptConfig((16, 32, 64))
    ours = to_torch_state(init_class_prompt_encoder(cfg, 64, 16, seed=0))
    ref = DiffusionModel(cfg, 64, 16)
    for name, t in ref.state_dict().items():
        weight = ref.get_parameter(name.rsplit(".", 1)[0] + ".weight")
        fan_in = torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]
        bound = fan_in ** -0.5
        assert ours[name].shape == tuple(t.shape)
        assert np.abs(ours[name]).max() <= bound, name
        if ours[name].size >= 256:
            assert ours[name].std() == pytest.approx(bound / np.sqrt(3), rel=0.1), name
