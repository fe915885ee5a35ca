"""Which parameters learn (SPEC §1.3) and the AdamW setup (SPEC §3): after optimizer steps the
image encoder and SAM's prompt encoder are unchanged, the class prompt encoder, mask decoder and
σ's move, and σ gets no weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.config import TINY_CLASS_PROMPT, AutoMedSamConfig, LossConfig, SamConfig
from automedsam_jax.losses import LossWeights, joint_loss
from automedsam_jax.optim import TRAINABLE, Trainee, make_optimizer
from convert.automedsam import automedsam_from_torch

torch = pytest.importorskip("torch")
from automedsam_reference import randomized_torch_automedsam  # noqa: E402

LR, WD = 1e-4, 0.01


def _trainee():
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    state = {k: v.numpy() for k, v in randomized_torch_automedsam(cfg, 0).state_dict().items()}
    return Trainee(automedsam_from_torch(state, cfg), LossWeights(LossConfig()))


def _flat(module):
    return {p: np.array(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(module))}


def _batch(cfg, B=2, seed=0):
    rs = np.random.RandomState(seed)
    S, L = cfg.sam.image_size, cfg.sam.low_res_size
    mask = np.zeros((B, L, L), np.float32)
    mask[:, L // 4:L // 2, L // 3:3 * L // 4] = 1
    return {"image": rs.rand(B, S, S, 3).astype(np.float32),
            "class_id": np.array([1, 2][:B], np.int32), "mask": mask,
            "box": np.tile(np.array([[S / 3, S / 4, 3 * S / 4, S / 2]], np.float32), (B, 1)),
            "dist": rs.rand(B, L, L).astype(np.float32) * 0.1}


@nnx.jit
def _train_step(trainee, optimizer, batch, key):
    def loss_fn(t):
        out = t.model(batch["image"], batch["class_id"], key=key)
        return joint_loss(out, batch, t.model.teacher(batch["box"]), t.loss_weights)[0]

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, TRAINABLE))(trainee)
    optimizer.update(trainee, grads)
    return loss


def _part(path):
    return path[1] if path[0] == "model" else path[0]


def test_only_trainable_parts_move():
    trainee = _trainee()
    optimizer = make_optimizer(trainee)
    before = _flat(trainee)
    batch = _batch(trainee.model.config)
    for step in range(2):
        loss = _train_step(trainee, optimizer, batch, jax.random.key(step))
        assert np.isfinite(float(loss))
    after = _flat(trainee)
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    parts = {_part(p) for p in before}
    assert parts == {"image_encoder", "prompt_encoder", "mask_decoder", "class_prompt_encoder",
                     "loss_weights"}
    for part in ("image_encoder", "prompt_encoder"):
        assert not {p for p in moved if _part(p) == part}, part
    for part in ("mask_decoder", "class_prompt_encoder", "loss_weights"):
        owned = [p for p in before if _part(p) == part]
        assert sum(p in moved for p in owned) >= 0.9 * len(owned), part


def test_sigma_gets_no_weight_decay():
    """With zero gradients AdamW's update is pure decoupled weight decay: p ← p·(1 − lr·wd) for
    decayed parameters; σ must stay exactly 1."""
    trainee = _trainee()
    optimizer = make_optimizer(trainee)
    before = _flat(trainee)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(trainee, TRAINABLE))
    nnx.jit(lambda t, o, g: o.update(t, g))(trainee, optimizer, zeros)
    after = _flat(trainee)
    np.testing.assert_array_equal(after[("loss_weights", "sigma")], np.ones(4, np.float32))
    for p in [("model", "mask_decoder", "iou_token", "embedding"),
              ("model", "class_prompt_encoder", "fc_label", "kernel")]:
        np.testing.assert_allclose(after[p], before[p] * (1 - LR * WD), rtol=1e-6)
    p = ("model", "image_encoder", "patch_embed", "proj", "kernel")
    np.testing.assert_array_equal(after[p], before[p])
