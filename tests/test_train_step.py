"""The step's parts: cached embeddings give the losses of the online encoder path; the step
trains only the trainable variables; the plateau scheduler follows ReduceLROnPlateau."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, LossConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights
from automedsam_jax.data import PipelineConfig, SyntheticConfig, prepare, train_dataset
from automedsam_jax.data.embedding_cache import CacheSpec, EmbeddingCache
from automedsam_jax.train.config import OptimConfig
from automedsam_jax.train.loop import make_tx, plateau_update
from automedsam_jax.train.optim import Trainee
from automedsam_jax.core.pipelining import dispatch_ahead
from automedsam_jax.train.step import (data_mesh, init_state, make_embed_fn, make_loss_fn,
                                       shard_batch)


@pytest.mark.slow
def test_cached_and_online_losses_agree(tmp_path):
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    builder = prepare(SyntheticConfig(num_cases=6, num_classes=3, height=40, width=40), str(tmp_path))
    src = builder.as_data_source("train")
    frame = cfg.sam.frame
    trainee = Trainee(random_model(cfg, 1), LossWeights(LossConfig()))
    tx = make_tx(OptimConfig())
    mesh = data_mesh()
    state, frozen, graphdef = init_state(trainee, tx, mesh)
    embed = make_embed_fn(graphdef, mesh)
    spec = CacheSpec.of(trainee.model, "synthetic/train", len(src))
    cache = EmbeddingCache.open_or_build(tmp_path / "cache", spec, src, frame,
                                         lambda x: embed(state["params"], frozen, x), chunk=4,
                                         log=lambda *_: None)
    assert len(cache) == 4 * len(src)
    it = iter(train_dataset(src, frame, cfg.sam.low_res_size, PipelineConfig(), batch_size=4))
    # The cached run's pipeline skips the images but must draw the same samples.
    it_cached = iter(train_dataset(src, frame, cfg.sam.low_res_size,
                                   PipelineConfig(), batch_size=4,
                                   images=False))
    online, cached = make_loss_fn(graphdef, mesh), make_loss_fn(graphdef, mesh, cached=True)
    key = jax.random.key(3)
    flips_seen = set()
    for _ in range(2):
        batch, batch_c = next(it), next(it_cached)
        assert "image" not in batch_c
        for k in ("class_id", "mask", "box", "dist", "flips", "slice_index"):
            np.testing.assert_array_equal(batch_c[k], batch[k], err_msg=k)
        flips_seen |= {tuple(f) for f in batch["flips"]}
        batch_c["embedding"] = cache.lookup(batch_c)
        a_total, a_terms = online(state, frozen, shard_batch(batch, mesh), key)
        b_total, b_terms = cached(state, frozen, shard_batch(batch_c, mesh, cached=True), key)
        np.testing.assert_allclose(float(b_total), float(a_total), rtol=1e-5)
        for k in a_terms:
            np.testing.assert_allclose(float(b_terms[k]), float(a_terms[k]), rtol=1e-5, atol=1e-7)
    assert len(flips_seen) > 1  # flipped variants were really looked up
    # A wrong flip variant gives a different loss: the comparison can fail.
    batch["flips"] = ~batch["flips"]
    batch["embedding"] = cache.lookup(batch)
    c_total, _ = cached(state, frozen, shard_batch(batch, mesh, cached=True), key)
    assert abs(float(c_total) - float(a_total)) > 1e-6


def test_plateau_scheduler():
    cfg = OptimConfig(plateau_patience=5)
    plateau = {"best": float("inf"), "bad_epochs": 0}
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95] + [0.95] + [0.8] + [0.9] * 5
    reduced = [plateau_update(plateau, x, cfg) for x in losses]
    # 5 epochs without improvement after 0.9 → reduce at the 5th (index 6); 0.8 resets.
    assert [i for i, r in enumerate(reduced) if r] == [6, 12]


def test_cosine_schedule_decays_to_zero_over_the_run():
    """Update k (1..10) of a 10-step run uses lr·½(1 + cos(π(k−1)/10)); the optimizer state then
    holds that lr, which the loop logs."""
    cfg = OptimConfig(lr=2e-3, weight_decay=0.0, lr_schedule="cosine")
    tx = make_tx(cfg, total_steps=10)
    params = {"w": jnp.zeros(3)}
    opt = tx.init(params)
    used, logged = [], []
    for _ in range(10):
        updates, opt = tx.update({"w": jnp.ones(3)}, opt, params)
        used.append(-float(updates["w"][0]))  # Adam's first steps on a constant gradient: lr·1
        logged.append(float(opt.hyperparams["learning_rate"]))
        params = optax.apply_updates(params, updates)
    expected = [2e-3 * 0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)]
    np.testing.assert_allclose(used, expected, rtol=1e-5)
    np.testing.assert_allclose(logged, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="total number of steps"):
        make_tx(cfg)


def test_dispatch_ahead_runs_ahead_and_keeps_order():
    pulled = []

    def items():
        for i in range(5):
            pulled.append(i)
            yield i

    out = dispatch_ahead(items(), lambda x: 10 * x, size=2)
    assert next(out) == 0 and pulled == [0, 1, 2]    # item 0 given, 1 and 2 already prepared
    assert list(out) == [10, 20, 30, 40] and pulled == [0, 1, 2, 3, 4]


def test_dispatch_ahead_dispatches_the_next_item_before_this_one_is_collected():
    """size=1, as evaluation and the embedding cache use it: fn(i + 1) runs before the caller
    handles fn(i); size=0 runs fn lazily; nothing in, nothing out."""
    log = []

    def fn(x):
        log.append(f"dispatch {x}")
        return x

    for x in dispatch_ahead(range(3), fn, size=1):
        log.append(f"collect {x}")
    assert log == ["dispatch 0", "dispatch 1", "collect 0", "dispatch 2", "collect 1",
                   "collect 2"]
    log.clear()
    for x in dispatch_ahead(range(2), fn, size=0):
        log.append(f"collect {x}")
    assert log == ["dispatch 0", "collect 0", "dispatch 1", "collect 1"]
    assert list(dispatch_ahead([], fn, size=1)) == []
