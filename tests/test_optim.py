"""Which parameters learn (docs/method.md#trained-and-frozen-parts) and the AdamW setup
(docs/method.md#paper-recipe): after optimizer steps the
image encoder and SAM's prompt encoder are unchanged, the class prompt encoder, mask decoder and
σ's move, and σ gets no weight decay."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, LossConfig, SamConfig
from automedsam_jax.core.distributed import to_host
from automedsam_jax.core.losses import LossWeights
from automedsam_jax.io.automedsam_conversion import automedsam_from_torch
from automedsam_jax.train.optim import Trainee, adamw
from automedsam_jax.train.step import data_mesh, init_state, make_train_step, shard_batch

pytestmark = pytest.mark.slow  # minutes: not in the fast tier


torch = pytest.importorskip("torch")
from automedsam_references.automedsam_reference import randomized_torch_automedsam  # noqa: E402

LR, WD = 1e-4, 0.01


def _trainee():
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    state = {k: v.numpy() for k, v in randomized_torch_automedsam(cfg, 0).state_dict().items()}
    return Trainee(automedsam_from_torch(state, cfg), LossWeights(LossConfig()))


def _flat(state) -> dict:
    """``{path: array}`` of an nnx state (on the host)."""
    return {p: np.array(v.get_value() if hasattr(v, "get_value") else v)
            for p, v in nnx.to_flat_state(to_host(state))}


def _batch(cfg, B=2, seed=0):
    rs = np.random.RandomState(seed)
    S, L = cfg.sam.image_size, cfg.sam.low_res_size
    mask = np.zeros((B, L, L), np.float32)
    mask[:, L // 4:L // 2, L // 3:3 * L // 4] = 1
    return {"image": rs.rand(B, S, S, 3).astype(np.float32),
            "class_id": np.array([1, 2][:B], np.int32), "mask": mask,
            "box": np.tile(np.array([[S / 3, S / 4, 3 * S / 4, S / 2]], np.float32), (B, 1)),
            "dist": rs.rand(B, L, L).astype(np.float32) * 0.1}


def _part(path):
    return path[1] if path[0] == "model" else path[0]


def test_only_trainable_parts_move():
    """The trainer's split: every ``Param`` of the class prompt encoder, the mask decoder and the
    σ's is trained, nothing else; after two steps of the trainer's jitted step every trained
    tensor has moved (all are non-zero, so decoupled weight decay moves even those the loss does
    not reach, like the IoU head; σ is not decayed but gets a gradient from every term)."""
    trainee = _trainee()
    all_params = _flat(nnx.state(trainee, nnx.Param))
    mesh = data_mesh(jax.devices()[:1])
    tx = adamw(LR, weight_decay=WD)
    state, frozen, graphdef = init_state(trainee, tx, mesh)
    before = _flat(state["params"])
    trained = {_part(p) for p in before}
    assert trained == {"mask_decoder", "class_prompt_encoder", "loss_weights"}
    expected = {p for p in all_params if _part(p) in trained}
    assert set(before) == expected  # every Param of the trained parts, and only those
    frozen_parts = {_part(p) for p in _flat(frozen)}
    assert frozen_parts == {"image_encoder", "prompt_encoder"}
    assert all(np.all(v != 0) or v.size == 0 for v in before.values())
    step = make_train_step(graphdef, tx, mesh)
    batch = shard_batch(_batch(trainee.model.config), mesh)
    for i in range(2):
        state, metrics = step(state, frozen, batch, jax.random.key(i))
        assert np.isfinite(float(metrics["loss"]))
    after = _flat(state["params"])
    unmoved = [p for p in before if np.array_equal(before[p], after[p])]
    assert unmoved == []


def test_sigma_gets_no_weight_decay():
    """With zero gradients AdamW's update is pure decoupled weight decay: p ← p·(1 − lr·wd) for
    decayed parameters; σ must stay exactly 1."""
    trainee = _trainee()
    tx = adamw(LR, weight_decay=WD)
    state, _, _ = init_state(trainee, tx, data_mesh(jax.devices()[:1]))
    params = state["params"]
    before = _flat(params)
    zeros = jax.tree.map(np.zeros_like, to_host(params))
    updates, _ = tx.update(zeros, state["opt"], params)
    after = _flat(optax.apply_updates(params, updates))
    np.testing.assert_array_equal(after[("loss_weights", "sigma")], np.ones(4, np.float32))
    for p in [("model", "mask_decoder", "iou_token", "embedding"),
              ("model", "class_prompt_encoder", "fc_label", "kernel")]:
        np.testing.assert_allclose(after[p], before[p] * (1 - LR * WD), rtol=1e-6)
