"""The two recipes (issue 13): ``--recipe paper`` trains exactly as before the extensions; the
all-classes step, negatives, the learned class embedding and augmentation do what their
docstrings say."""

import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.core.automedsam import AutoMedSamOutput
from automedsam_jax.core.config import AutoMedSamConfig, ClassPromptConfig, LossConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights, loss_terms
from automedsam_jax.data import PipelineConfig, SyntheticConfig, prepare, train_dataset
from automedsam_jax.data.augment import AugmentConfig, augment_slice
from automedsam_jax.data.embedding_cache import CacheSpec, EmbeddingCache
from automedsam_jax.data.sample import class_sample, slice_sample
from automedsam_jax.train.config import OptimConfig, TrainConfig, from_args, override
from automedsam_jax.train.loop import build_model, make_tx
from automedsam_jax.train.optim import Trainee
from automedsam_jax.train.step import (data_mesh, init_state, loss_and_terms, make_embed_fn,
                                       make_loss_fn, shard_batch, split_trainee)

ROOT = Path(__file__).parents[1]
GOLDEN = Path(__file__).parent / "data" / "paper_recipe_params.npz"
TINY = ClassPromptConfig(widths=(8, 16, 32))


@pytest.mark.slow
def test_paper_recipe_reproduces_the_code_before_the_extensions(tmp_path):
    """``tests/data/paper_recipe_params.npz`` holds the class prompt encoder and mask decoder
    after this exact command, run with the code of commit d187387 (before issue 13: the
    command had no --recipe then, and its defaults were the paper's). Same machine kind, same
    seed, the layers' native forms (``--nocpu-rewrites``: the CPU rewrites of issue 14
    round differently; ``tests/test_cpu_rewrites.py`` checks them). On the machine that wrote it
    the parameters are bit-identical; the CI's CPU reduces in another order, and Adam's
    normalised step turns those last-bit differences of near-zero gradients into parameter
    differences of up to ~7e-7 after the 4 steps. So each array's distance to the golden one
    must be under 1 % of the training's own update to it (golden − initial) plus 1e-5 (the
    rounding noise of arrays whose gradient is zero in exact arithmetic, such as attention key
    biases): another class drawn, another initialisation or another loss moves an array by
    ~100 % of its update, and one Adam step moves each element by ~lr = 1e-3."""
    cmd = [sys.executable, str(ROOT / "train.py"), "--recipe", "paper",
           "--dataset", "synthetic:num_cases=6,num_classes=3,height=48,width=48",
           "--backbone", "tiny_vit_b", "--weights", "random",
           "--class-prompt-widths", "8", "16", "32",
           "--epochs", "2", "--batch-size", "2", "--max-steps", "4", "--lr", "1e-3",
           "--workdir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"),
           "--no-progress", "--no-cpu-rewrites"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    from automedsam_jax.io.checkpoint import load_model
    model = load_model(tmp_path / "run" / "final")
    flat = {"/".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(model))}
    golden = np.load(GOLDEN)
    assert len(golden.files) > 100
    initial = build_model(from_args(cmd[2:]), num_classes=3)
    init = {"/".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(initial))}
    frozen = [n for n in flat if n.startswith("image_encoder/")]
    assert frozen and all(np.array_equal(flat[n], init[n]) for n in frozen)  # the run's init
    moved = 0
    for name in golden.files:
        update = np.linalg.norm(golden[name] - init[name])
        moved += update > 1e-3
        assert np.linalg.norm(flat[name] - golden[name]) <= 1e-2 * update + 1e-5, name
    assert moved > 100  # the golden run trained these arrays


def test_recipe_switches_from_the_command_line():
    paper = from_args(["--recipe", "paper", "--dataset", "synthetic:num_cases=4"])
    assert (paper.model.class_prompt.class_embedding, paper.pipeline.classes_per_step,
            paper.pipeline.negatives, paper.pipeline.augment.variants, paper.run.presence,
            paper.pipeline.flips) == ("scalar", "one", False, 0, False, True)
    # The paper recipe is TrainConfig's defaults (docs/method.md#recipes).
    assert paper == override(TrainConfig(), {"data.dataset": "synthetic:num_cases=4",
                                             "run.workdir": "runs/synthetic",
                                             "recipe": "paper", "composed": ("paper",)})
    improved = from_args(["--dataset", "synthetic:num_cases=4"])
    assert (improved.recipe, improved.model.class_prompt.class_embedding,
            improved.pipeline.classes_per_step, improved.pipeline.negatives,
            improved.run.presence) == ("improved", "learned", "one", True, True)
    # Each extension has its own switch over the recipe.
    one = from_args(["--dataset", "synthetic:num_cases=4", "--class-embedding", "scalar",
                     "--no-negatives", "--variants", "2", "--classes-per-step", "all"])
    assert (one.model.class_prompt.class_embedding, one.pipeline.negatives,
            one.pipeline.augment.variants, one.pipeline.classes_per_step) == (
        "scalar", False, 2, "all")
    with pytest.raises(ValueError, match="negative-fraction"):
        from_args(["--dataset", "synthetic:num_cases=4", "--negative-fraction", "1.5"])


def _tiny(cpc=TINY, seed=0):
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), cpc)
    return random_model(cfg, seed)


def _all_class_batch(model, k=3, present=None, seed=0):
    """One slice, K classes: random embedding, masks, boxes and distance maps, explicit noise."""
    rs = np.random.RandomState(seed)
    g, c = model.config.sam.embedding_size, model.config.sam.decoder.transformer_dim
    low = model.config.sam.low_res_size
    present = np.ones(k, bool) if present is None else np.asarray(present)
    mask = (rs.rand(1, k, low, low) > 0.7).astype(np.float32) * present[None, :, None, None]
    return {"embedding": rs.randn(1, g, g, c).astype(np.float32),
            "class_id": np.arange(1, k + 1, dtype=np.int32)[None],
            "mask": mask, "dist": rs.rand(1, k, low, low).astype(np.float32) * mask,
            "box": (rs.rand(1, k, 4) * 40 + np.array([0, 0, 40, 40])).astype(np.float32)
            * present[None, :, None],
            "present": present[None], "noise": rs.randn(1, k, g, g, c).astype(np.float32)}


@pytest.mark.slow
def test_all_class_gradient_is_the_mean_of_the_one_class_gradients():
    """With every class present, the all-classes loss is the mean over the K one-class losses
    (each term is a mean over samples, and Σ L_i/(2σ_i²) + log(1 + σ_i²) is affine in the
    terms), so its gradient is the mean of the K one-class gradients of the same slice and
    noise."""
    model = _tiny()
    trainee = Trainee(model, LossWeights(LossConfig()))
    graphdef, params, frozen = split_trainee(trainee)
    batch = _all_class_batch(model)
    key = jax.random.key(0)

    @jax.jit  # traced twice: the all-class batch, then the one-class batches' shapes
    def grad(b):
        def f(p):
            return loss_and_terms(nnx.merge(graphdef, p, frozen), b, key, cached=True)[0]
        return jax.grad(f)(params)

    g_all = grad(batch)
    ones = [grad({"embedding": batch["embedding"], "class_id": batch["class_id"][:, k],
                  "mask": batch["mask"][:, k], "dist": batch["dist"][:, k],
                  "box": batch["box"][:, k], "noise": batch["noise"][:, k]}) for k in range(3)]
    mean = jax.tree.map(lambda *g: sum(g) / 3, *ones)
    flat_all, flat_mean = jax.tree.leaves(g_all), jax.tree.leaves(mean)
    assert len(flat_all) > 20
    for a, b in zip(flat_all, flat_mean):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    # Not trivially equal: one class alone has another gradient.
    assert not np.allclose(jax.tree.leaves(ones[0])[-1], flat_all[-1], rtol=1e-3)


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def test_negatives_losses_as_defined():
    """An absent class (present 0, empty mask): CE covers it (every sample) when negatives are
    on, else not; MSE, Dice and SD are means over the present samples only. Expectations are
    NumPy's, sample by sample."""
    rs = np.random.RandomState(0)
    n, L, g, c = 4, 16, 4, 8
    present = np.array([1, 0, 1, 0], np.float32)
    mask = (rs.rand(n, L, L) > 0.6).astype(np.float32) * present[:, None, None]
    dist = rs.rand(n, L, L).astype(np.float32) * present[:, None, None]
    logits = (2 * rs.randn(n, L, L)).astype(np.float32)
    sp, dn = rs.randn(n, 2, c).astype(np.float32), rs.randn(n, g, g, c).astype(np.float32)
    tsp, tdn = rs.randn(n, 2, c).astype(np.float32), rs.randn(n, g, g, c).astype(np.float32)
    out = AutoMedSamOutput(jnp.asarray(logits), jnp.zeros(n), jnp.asarray(sp), jnp.asarray(dn))
    batch = {"mask": mask, "dist": dist, "present": present}
    p = _np_sigmoid(logits)
    x = logits.astype(np.float64)
    bce = (np.maximum(x, 0) - x * mask + np.log1p(np.exp(-np.abs(x)))).mean((1, 2))
    dice = 1 - (2 * (p * mask).sum((1, 2)) + 1e-5) / ((p * p).sum((1, 2)) + mask.sum((1, 2))
                                                    + 1e-5)
    sd = ((p - mask) ** 2 * dist ** 2).mean((1, 2))
    mse = ((sp - tsp) ** 2).mean((1, 2)) + ((dn - tdn) ** 2).mean((1, 2, 3))
    on = present.astype(bool)
    for negatives, ce in ((True, bce.mean()), (False, bce[on].mean())):
        terms = loss_terms(out, batch, (tsp, tdn), ("mse", "ce", "dice", "sd"), negatives)
        assert float(terms["ce"]) == pytest.approx(ce, rel=1e-5)
        assert float(terms["dice"]) == pytest.approx(dice[on].mean(), rel=1e-5)
        assert float(terms["sd"]) == pytest.approx(sd[on].mean(), rel=1e-5)
        assert float(terms["mse"]) == pytest.approx(mse[on].mean(), rel=1e-5)
    # A negative's CE pushes its logits down everywhere.
    def ce_of(lg):
        o = AutoMedSamOutput(lg, jnp.zeros(n), None, None)
        return loss_terms(o, batch, (tsp, tdn), ("ce",), True)["ce"]
    grad = np.asarray(jax.grad(ce_of)(jnp.asarray(logits)))
    assert (grad[1] > 0).all() and (grad[3] > 0).all()


def test_learned_class_embedding_feeds_the_map_and_the_attention_channel():
    from automedsam_jax.core.modeling.class_prompt_encoder import init_class_prompt_encoder
    cpc = ClassPromptConfig(widths=(8, 16, 32), class_embedding="learned", num_classes=3)
    g = 6
    cpe = init_class_prompt_encoder(cpc, 32, g, seed=0)
    table = np.asarray(cpe.class_embed.embedding.get_value())
    assert table.shape == (4, g * g) and not hasattr(cpe, "fc_label")
    assert 0.7 < table.std() < 1.3  # nn.Embedding's N(0, 1)
    np.testing.assert_array_equal(np.asarray(cpe.class_value.get_value()), [0, 1, 2, 3])
    ids = jnp.array([2, 3])
    np.testing.assert_array_equal(np.asarray(cpe.class_map(ids))[..., 0],
                                  table[[2, 3]].reshape(2, g, g))
    p = cpe.class_map(ids)
    np.testing.assert_array_equal(np.asarray(cpe.class_channel(ids, p))[:, 0, 0, 0], [2, 3])
    # Class 2's row of either table changes class 2's prompts only.
    emb = jnp.asarray(np.random.RandomState(0).randn(2, g, g, 32).astype(np.float32))
    before = cpe(emb, ids)
    for param in (cpe.class_embed.embedding, cpe.class_value):
        param.set_value(param.get_value().at[2].add(1.0))
        after = cpe(emb, ids)
        assert not np.allclose(before[1][0], after[1][0], atol=1e-6)
        np.testing.assert_array_equal(before[1][1], after[1][1])
        before = after
    # Without classes (the command line fills num_classes from the dataset) it cannot be built.
    with pytest.raises(ValueError, match="num_classes"):
        init_class_prompt_encoder(ClassPromptConfig(widths=(8, 16, 32),
                                                    class_embedding="learned"), 32, g, seed=0)


def test_slice_sample_is_class_sample_per_class_with_empty_negatives():
    from automedsam_jax.core.config import LITEMEDSAM_FRAME
    rs = np.random.RandomState(0)
    label = np.zeros((40, 50), np.uint8)
    label[5:20, 5:25] = 1
    label[25:35, 30:45] = 3
    image = rs.randint(0, 255, (40, 50, 1)).astype(np.uint8)
    s = slice_sample(image, label, 4, LITEMEDSAM_FRAME, 256)
    np.testing.assert_array_equal(s["present"], [True, False, True, False])
    np.testing.assert_array_equal(s["class_id"], [1, 2, 3, 4])
    for c in (1, 3):
        one = class_sample(image, label, c, LITEMEDSAM_FRAME, 256)
        for k in ("mask", "dist", "box"):
            np.testing.assert_array_equal(s[k][c - 1], one[k], err_msg=f"{k} of class {c}")
        np.testing.assert_array_equal(s["image"], one["image"])
    for c in (2, 4):
        assert not s["mask"][c - 1].any() and not s["dist"][c - 1].any()
        assert not s["box"][c - 1].any()


def test_augmented_variants_are_fixed_per_slice_and_move_image_and_label_together():
    rs = np.random.RandomState(0)
    label = np.zeros((60, 80), np.uint8)
    label[20:40, 30:50] = 2
    image = np.where(label[..., None] > 0, 200, rs.randint(0, 60, (60, 80, 1))).astype(np.uint8)
    cfg = AugmentConfig(variants=3)
    same = augment_slice(image, label, cfg, 0, "case", 4, 0)
    assert same[0] is image and same[1] is label
    a1 = augment_slice(image, label, cfg, 0, "case", 4, 1)
    np.testing.assert_array_equal(a1[0], augment_slice(image, label, cfg, 0, "case", 4, 1)[0])
    a2 = augment_slice(image, label, cfg, 0, "case", 4, 2)
    assert not np.array_equal(a1[0], a2[0]) and not np.array_equal(a1[0], image)
    for aug_image, aug_label in (a1, a2):
        assert aug_image.shape == image.shape and aug_label.shape == label.shape
        inside = aug_label == 2
        assert inside.any()
        # The organ stays the bright square wherever the warp put it (edges aside).
        core = inside & np.roll(inside, 2, 0) & np.roll(inside, -2, 0) \
            & np.roll(inside, 2, 1) & np.roll(inside, -2, 1)
        assert aug_image[..., 0][core].min() > aug_image[..., 0][~inside].mean()


@pytest.mark.slow
def test_cached_augmented_all_class_losses_agree_with_online(tmp_path):
    """The cache embeds every augmented variant as the online pipeline makes it: the same
    all-classes losses either way."""
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY)
    builder = prepare(SyntheticConfig(num_cases=6, num_classes=3, height=40, width=40),
                      str(tmp_path))
    src = builder.as_data_source("train")
    frame = cfg.sam.frame
    trainee = Trainee(random_model(cfg, 1), LossWeights(LossConfig()))
    mesh = data_mesh()
    state, frozen, graphdef = init_state(trainee, make_tx(OptimConfig()), mesh)
    embed = make_embed_fn(graphdef, mesh)
    classes, variants = "all", 2
    augment = AugmentConfig(variants=variants)
    spec = CacheSpec.of(trainee.model, "synthetic/train", len(src), flips=False,
                        augment=augment, seed=3)
    cache = EmbeddingCache.open_or_build(tmp_path / "cache", spec, src, frame,
                                         lambda x: embed(state["params"], frozen, x), chunk=4,
                                         log=lambda *_: None)
    assert len(cache) == (variants + 1) * len(src)
    pc = PipelineConfig(flips=False, classes_per_step=classes, augment=augment)
    kw = dict(batch_size=4, seed=3, num_classes=3)
    it = iter(train_dataset(src, frame, cfg.sam.low_res_size, pc, **kw))
    it_c = iter(train_dataset(src, frame, cfg.sam.low_res_size, pc, images=False, **kw))
    online = make_loss_fn(graphdef, mesh, negatives=True)
    cached = make_loss_fn(graphdef, mesh, cached=True, negatives=True)
    key = jax.random.key(3)
    seen = set()
    for _ in range(3):
        b, bc = next(it), next(it_c)
        assert b["class_id"].shape == (4, 3) and b["mask"].shape[:2] == (4, 3)
        seen |= set(b["variant"].tolist())
        bc["embedding"] = cache.lookup(bc)
        a, _ = online(state, frozen, shard_batch(b, mesh), key)
        c, _ = cached(state, frozen, shard_batch(bc, mesh, cached=True), key)
        np.testing.assert_allclose(float(c), float(a), rtol=1e-5)
    assert len(seen) > 1
    # A wrong variant's embedding changes the loss: the comparison can fail.
    bc["variant"] = (bc["variant"] + 1) % (variants + 1)
    bc["embedding"] = cache.lookup(bc)
    c, _ = cached(state, frozen, shard_batch(bc, mesh, cached=True), key)
    assert abs(float(c) - float(a)) > 1e-6


def test_calibrate_picks_the_middle_of_the_best_threshold_interval():
    from automedsam_jax.evaluation import calibrate
    # Absent classes leave masks of 0–0.1 %, present ones 2–30 %: any t in (0.001, 0.02]
    # separates them; the geometric middle is √(0.001·0.02).
    areas = np.array([[0.0, 0.3, 0.001], [0.02, 0.0005, 0.1]])
    truth = np.array([[False, True, False], [True, False, True]])
    t, acc = calibrate(areas, truth)
    assert acc == 1.0 and t == pytest.approx(math.sqrt(0.001 * 0.02))
    # One absent class with a large mask (0.05) cannot be separated: 5 of 6 right at best.
    t, acc = calibrate(np.array([0.0, 0.05, 0.02, 0.3]), np.array([False, False, True, True]))
    assert acc == 0.75 and 0.0 < t <= 0.02
    # Everything present: a threshold at or under the smallest area keeps all; an area of 0 (no
    # mask at all) is never present, whatever the threshold.
    t, acc = calibrate(np.array([0.01, 0.1]), np.array([True, True]))
    assert acc == 1.0 and t <= 0.01
    t, acc = calibrate(np.array([0.0, 0.1]), np.array([True, True]))
    assert acc == 0.5


def test_presence_is_not_calibrated_on_pairs_of_one_kind():
    """One validation pair (issue 33: "area ≥ 0", "100.0 % of 1 validation pairs right" while the
    table showed a miss), or pairs all of one kind, calibrate nothing: training says so and
    stores no rule (every non-empty mask drawn)."""
    from automedsam_jax.evaluation import too_few_kinds
    assert too_few_kinds(np.array([True])) == (
        "the 1 validation (slice, class) pair(s) are all present, too few kinds to calibrate "
        "a rule on")
    assert "all absent" in too_few_kinds(np.zeros((3, 2), bool))
    assert too_few_kinds(np.array([[True, False]])) is None


@pytest.mark.slow
def test_training_calibrates_and_stores_the_presence_rule(tmp_path):
    """train.py's improved recipe (with the class prompt encoder) writes a presence rule into
    both exported models; reloaded,
    it is the one the command printed, and it gets as many validation pairs right as the best
    threshold found by brute force over masks computed here class by class."""
    from automedsam_jax.io.checkpoint import read_meta
    from automedsam_jax.io.rundir import load_automedsam
    from automedsam_jax.core.preprocess import postprocess_masks, preprocess_image
    from automedsam_jax.train.loop import run

    spec = "synthetic:num_cases=8,num_classes=3,height=48,width=48,depth=4"
    cfg = from_args(["--dataset", spec, "--backbone", "tiny_vit_b", "--weights", "random",
                     "--class-prompt-widths", "8", "16", "32", "--epochs", "2", "--batch-size", "2",
                     "--workdir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"),
                     "--no-progress", "--variants", "1", "--prompt", "class"])
    summary = run(cfg)
    for name in ("best", "final"):
        stored = read_meta(tmp_path / "run" / name)["presence"]
        assert stored == summary[f"presence_{name}"]
        assert load_automedsam(tmp_path / "run" / name).min_area == stored["min_area"]
    trained = load_automedsam(tmp_path / "run" / "final")
    model, frame = trained.model, trained.model.config.sam.frame
    src = prepare(spec, str(tmp_path / "data")).as_data_source("validation")
    areas, truth = [], []
    for i in range(len(src)):
        r = src[i]
        x, resized = preprocess_image(r["image"], frame)
        for c in (1, 2, 3):
            low = model(jnp.asarray(x)[None], jnp.array([c])).low_res_logits
            areas.append(float((np.asarray(postprocess_masks(low, resized, frame)) > 0).mean()))
            truth.append(bool((r["label"] == c).any()))
    areas, truth = np.array(areas), np.array(truth)
    best = max(np.mean((areas >= t) == truth) for t in np.concatenate([[0.0], areas, [1.1]]))
    stored = read_meta(tmp_path / "run" / "final")["presence"]
    assert stored["pairs"] == len(areas)
    assert stored["accuracy"] == pytest.approx(best)
    assert np.mean((areas >= stored["min_area"]) == truth) == pytest.approx(best)



def _records(n=40, seed=0):
    """In-memory slice records: class 1 on every slice, class 2 on even slices, slices 0–3
    without foreground."""
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        label = np.zeros((32, 40), np.uint8)
        if i >= 4:
            label[4:14, 5:20] = 1
            if i % 2 == 0:
                label[18:28, 22:36] = 2
        out.append({"image": rs.randint(0, 255, (32, 40, 1)).astype(np.uint8), "label": label,
                    "case_id": b"case", "slice_index": np.int32(i)})
    return out


def test_one_class_negatives_take_absent_classes_at_the_set_rate():
    from automedsam_jax.core.config import LITEMEDSAM_FRAME
    import grain
    recs = _records()
    cfg = PipelineConfig(flips=False, negatives=True, negative_fraction=0.25)
    negatives = with_absent = 0
    for batch in train_dataset(recs, LITEMEDSAM_FRAME, 64, cfg, batch_size=4, num_classes=3,
                               images=False, num_epochs=20, shard=grain.sharding.NoSharding()):
        for c, z, m, b, p in zip(batch["class_id"], batch["slice_index"], batch["mask"],
                                 batch["box"], batch["present"]):
            label = recs[z]["label"]
            assert bool(p) == bool((label == c).any()) == bool(m.any())
            if not p:
                negatives += 1
                assert not b.any()
            if z < 4:
                assert not p  # an organ-free slice can only give a negative
            else:
                with_absent += 1
    # Slices with foreground miss class 3 (and 2 on odd slices): 1 sample in 4 is negative.
    rate = (negatives - 20 * 4) / with_absent
    assert 0.18 < rate < 0.32
    # The paper's pipeline carries no "present" and refuses organ-free slices.
    paper = PipelineConfig(flips=False)
    kw = dict(batch_size=4, images=False, shard=grain.sharding.NoSharding())
    assert "present" not in next(iter(train_dataset(recs[4:], LITEMEDSAM_FRAME, 64, paper,
                                                    **kw)))
    with pytest.raises(ValueError, match="no foreground"):
        next(iter(train_dataset(recs[:4], LITEMEDSAM_FRAME, 64, paper, **kw)))
