"""The whole AutoMedSAM against the PyTorch reference (``automedsam_references.torch_automedsam``)
on tiny random-weight backbones of each family; conversion both ways; the K-class label map; model
directories. The PyTorch comparisons need the ``[torch]`` extra (``requires_torch``); the rest
runs without it.

Tolerance: relative error < 1e-5 in float32 (see ``test_parity_tiny``). segment-anything's mask
decoder (ViT family) repeats one image embedding over all prompts, so that reference runs at batch
size 1; LiteMedSAM's takes one embedding per prompt and runs at batch size 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automedsam_jax.core.automedsam import AutoMedSAM, label_map
from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, ClassPromptConfig,
                                        SamConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.io.automedsam_conversion import automedsam_from_torch, automedsam_to_torch
from automedsam_jax.io.conversion import CheckpointMismatch
from automedsam_references.automedsam_reference import (closed_form_noise,
                                                       randomized_torch_automedsam, step_noise)
from automedsam_references.torch_reference import nchw, nhwc, rel_err

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None

TOL = 1e-5
BATCH = {"tiny_vit_b": 1, "tiny_litemedsam": 2}


def _convert(cfg, seed=1):
    tm = randomized_torch_automedsam(cfg, seed)
    state = {k: v.numpy() for k, v in tm.state_dict().items()}
    return tm, automedsam_from_torch(state, cfg), state


@pytest.fixture(scope="module", params=list(BATCH))
def pair(request):
    cfg = AutoMedSamConfig(SamConfig.preset(request.param), TINY_CLASS_PROMPT)
    return (cfg, *_convert(cfg))


def _image(cfg, n, seed=0):
    S = cfg.sam.image_size
    return np.random.RandomState(seed).rand(n, S, S, 3).astype(np.float32)


def _torch_forward(tm, cfg, images, labels, eps):
    with torch.no_grad():
        low, iou = tm(nchw(images), torch.from_numpy(labels), torch.from_numpy(eps))
    return low[:, 0].numpy(), iou[:, 0].numpy()


@pytest.mark.slow
@pytest.mark.requires_torch
def test_end_to_end_with_explicit_noise(pair):
    cfg, tm, jm, _ = pair
    B, g, C = BATCH[cfg.sam.name], cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    x, labels = _image(cfg, B), np.array([2, 1][:B], np.int32)
    eps = step_noise(cfg.class_prompt.timesteps, (B, C, g, g), seed=4)
    t_low, t_iou = _torch_forward(tm, cfg, x, labels, eps)
    out = jax.jit(lambda m, x, c, n: m(x, c, noise=n))(jm, x, labels, closed_form_noise(eps))
    L = cfg.sam.low_res_size
    assert out.low_res_logits.shape == (B, L, L) and out.iou.shape == (B,)
    assert out.sparse.shape == (B, 2, C) and out.dense.shape == (B, g, g, C)
    assert rel_err(out.low_res_logits, t_low) < TOL
    assert rel_err(out.iou, t_iou) < TOL


def _torch_embedding(tm, x):
    with torch.no_grad():
        return nhwc(tm.image_encoder(nchw(x)))


@pytest.mark.requires_torch
def test_decode_from_cached_embeddings(pair):
    """Embeddings computed once (by the reference encoder, as training caches them) decode to the
    reference masks; no key means the noise-free diffusion (all T draws zero)."""
    cfg, tm, jm, _ = pair
    B, g, C = BATCH[cfg.sam.name], cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    x, labels = _image(cfg, B, seed=7), np.array([1, 3][:B], np.int32)
    zeros = np.zeros((cfg.class_prompt.timesteps, B, C, g, g), np.float32)
    t_low, t_iou = _torch_forward(tm, cfg, x, labels, zeros)
    out = jax.jit(lambda m, e, c: m.decode(e, c))(jm, _torch_embedding(tm, x), labels)
    assert rel_err(out.low_res_logits, t_low) < TOL
    assert rel_err(out.iou, t_iou) < TOL


@pytest.mark.requires_torch
def test_all_classes_decoded_against_one_embedding(pair):
    """``decode`` with ``(1, K)`` class ids — every class against one embedding, the path of
    training's all-classes step and of evaluation — equals K separate reference runs (from the
    image on the ViT family, from the reference embedding on TinyViT); the label map equals the
    NumPy argmax/threshold of the reference probabilities."""
    cfg, tm, jm, _ = pair
    K, g, C = 3, cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    x = _image(cfg, 1, seed=9)
    zeros = np.zeros((cfg.class_prompt.timesteps, 1, C, g, g), np.float32)
    ref = np.stack([_torch_forward(tm, cfg, x, np.array([k], np.int32), zeros)[0][0]
                    for k in range(1, K + 1)])
    ref_probs = 1 / (1 + np.exp(-ref.astype(np.float64)))
    ids = jnp.arange(1, K + 1, dtype=jnp.int32)[None]
    if cfg.sam.family == "vit":  # the whole path from the image (the tiny ViT compiles fast)
        emb = jax.jit(lambda m, x: m.embed(x))(jm, x)
    else:
        emb = jnp.asarray(_torch_embedding(tm, x))
    logits = jax.jit(lambda m, e: m.decode(e, ids).low_res_logits)(jm, emb)
    probs = jax.nn.sigmoid(logits)
    labels = label_map(probs)
    assert probs.shape == (K, *ref.shape[1:]) and labels.shape == ref.shape[1:]
    assert rel_err(probs, ref_probs) < TOL
    expected = np.where(ref_probs.max(0) > 0.5, ref_probs.argmax(0) + 1, 0)
    top2 = np.sort(ref_probs, 0)[-2:]
    clear = (top2[1] - top2[0] > 1e-4) & (np.abs(top2[1] - 0.5) > 1e-4)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(np.asarray(labels)[clear], expected[clear])


def test_label_map_rules():
    probs = np.zeros((3, 2, 3), np.float32)
    probs[:, 0, 0] = [0.2, 0.4, 0.5]     # none above 0.5 → background
    probs[:, 0, 1] = [0.6, 0.9, 0.7]     # class 2
    probs[:, 0, 2] = [0.8, 0.8, 0.1]     # tie → lower id, class 1
    probs[:, 1, 0] = [0.1, 0.1, 0.51]    # class 3
    np.testing.assert_array_equal(label_map(probs), [[0, 2, 1], [3, 0, 0]])


@pytest.mark.requires_torch
def test_round_trip_is_exact(pair):
    """PyTorch → Flax → PyTorch is bit-exact with the authors' key names, and loads strictly."""
    cfg, _, jm, state = pair
    back = automedsam_to_torch(jm)
    assert back.keys() == state.keys()
    assert any(k.startswith("class_prmpt_encoder.unet.") for k in back)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    from automedsam_references.torch_automedsam import build_torch_automedsam
    build_torch_automedsam(cfg).load_state_dict({k: torch.from_numpy(v) for k, v in back.items()},
                                                strict=True)


@pytest.mark.requires_torch
def test_mismatch_lists_every_problem(pair):
    cfg, _, _, state = pair
    bad = dict(state)
    bad["class_prompt_encoder.fc_label.weight"] = bad.pop("class_prmpt_encoder.fc_label.weight")
    bad["mask_decoder.iou_token.weight"] = bad["mask_decoder.iou_token.weight"][:, :4]
    with pytest.raises(CheckpointMismatch) as err:
        automedsam_from_torch({"model": bad}, cfg)
    msg = str(err.value)
    for part in ["class_prompt_encoder.fc_label.weight", "missing",
                 "class_prmpt_encoder.fc_label.weight", "mask_decoder.iou_token.weight"]:
        assert part in msg, part


@pytest.mark.slow
@pytest.mark.requires_torch
@pytest.mark.parametrize("branches", ["dense", "sparse"])
def test_single_branch_ablation(branches):
    """A disabled branch is replaced by MedSAM's no-prompt output, as in the reference."""
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"),
                           ClassPromptConfig((8, 16, 32), timesteps=5, branches=branches))
    tm, jm, state = _convert(cfg, seed=2)
    assert not any(f"{'sparse' if branches == 'dense' else 'dense'}_dec" in k for k in state)
    g, C = cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    x, labels = _image(cfg, 1, seed=3), np.array([2], np.int32)
    eps = step_noise(5, (1, C, g, g), seed=5)
    t_low, t_iou = _torch_forward(tm, cfg, x, labels, eps)
    out = jm.decode(_torch_embedding(tm, x), labels, noise=closed_form_noise(eps))
    assert (out.sparse is None) == (branches == "dense")
    assert (out.dense is None) == (branches == "sparse")
    assert rel_err(out.low_res_logits, t_low) < TOL
    assert rel_err(out.iou, t_iou) < TOL


@pytest.mark.requires_torch
def test_from_sam_keeps_the_pretrained_backbone(pair):
    """``from_sam`` takes over encoder, prompt encoder and decoder weights unchanged and gives
    the class prompt encoder its own initialisation."""
    from automedsam_jax.io.conversion import sam_from_torch
    cfg, tm, _, state = pair
    sam_state = {k: v for k, v in state.items() if not k.startswith("class_prmpt_encoder.")}
    model = AutoMedSAM.from_sam(sam_from_torch(sam_state, cfg.sam), TINY_CLASS_PROMPT, seed=0)
    back = automedsam_to_torch(model)
    for k, v in sam_state.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    w = back["class_prmpt_encoder.unet.enc1.0.weight"]
    assert w.shape == state["class_prmpt_encoder.unet.enc1.0.weight"].shape
    assert np.isfinite(w).all() and w.std() > 0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(BATCH))
def test_model_directory_round_trip(backbone, tmp_path):
    """save_model/load_model keep an AutoMedSAM whole: config and every variable (a random model
    of each family, so no PyTorch is needed)."""
    from flax import nnx

    from automedsam_jax.io.checkpoint import load_model, save_model
    from automedsam_jax.inference import SamPredictor
    cfg = AutoMedSamConfig(SamConfig.preset(backbone), TINY_CLASS_PROMPT)
    jm = random_model(cfg, seed=5)
    save_model(jm, tmp_path / "m", extra={"class_names": ["a", "b"]})
    back = load_model(tmp_path / "m")
    assert type(back).__name__ == "AutoMedSAM" and back.config == cfg
    saved, loaded = nnx.to_flat_state(nnx.state(jm)), nnx.to_flat_state(nnx.state(back))
    assert len(saved) == len(loaded) > 0
    for (p, a), (q, b) in zip(saved, loaded):
        assert p == q
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(p))
    with pytest.raises(TypeError, match="prompted by class ids"):
        SamPredictor(back)
