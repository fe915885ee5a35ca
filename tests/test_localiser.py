"""The localisation head: boxes and presence read off a hand-built map, the box prompts it
feeds the backbone against SAM's prompt encoder written out in NumPy, its loss against a
hand computation, its grid target, and training that touches nothing but the head (and, with
``train_decoder=False``, a class-prompt run that leaves the decoder bit-identical)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, LocaliserConfig,
                                        LossConfig, SamConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights, localiser_loss
from automedsam_jax.core.modeling.localiser import map_boxes
from automedsam_jax.data import PipelineConfig, SyntheticConfig, prepare, train_dataset
from automedsam_jax.data.sample import grid_labels
from automedsam_jax.inference import Segmenter, segment_slices
from automedsam_jax.core.preprocess import Resized, model_input, postprocess_masks
from automedsam_jax.train.config import OptimConfig
from automedsam_jax.train.loop import make_tx
from automedsam_jax.train.optim import Trainee
from automedsam_jax.train.step import data_mesh, init_state, make_train_step, shard_batch


def _map(g, cells):
    """A (g, g, 3) logit map: background wins everywhere but at ``cells`` {class: [(r, c)]}."""
    logits = np.zeros((g, g, 3), np.float32)
    logits[..., 0] = 1.0
    for c, where in cells.items():
        for r, col in where:
            logits[r, col, c] = 2.0
    return logits


def test_map_boxes_take_the_largest_component_with_margin_and_clip():
    g, size = 8, 32  # 4 px per cell
    big = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2)]        # rows 1-3, cols 1-2: 5 cells
    stray = [(6, 6)]                                      # a single cell: dropped
    pad = [(7, 1), (7, 2), (7, 3), (6, 1), (6, 2), (6, 3)]  # in the padding (rows >= 6)
    logits = _map(g, {1: big + stray, 2: pad})
    boxes, areas = map_boxes(logits, np.array([1, 2]), extent=(24, 32), input_size=size,
                             margin=1.0)
    # Class 1: cols 1..2 → x 4..12, rows 1..3 → y 4..16; one cell (4 px) more per side.
    np.testing.assert_array_equal(boxes[0], [0, 0, 16, 20])
    # Extent 24 px high = 6 cell rows: the area is over 6 × 8 cells.
    assert areas[0] == pytest.approx(5 / 48)
    # Class 2 lies only in the padding: no box, no presence.
    np.testing.assert_array_equal(boxes[1], 0)
    assert areas[1] == 0
    # The right/bottom clip, without margin: a component at the image's last cells.
    logits = _map(g, {2: [(4, 6), (4, 7), (5, 7)]})
    boxes, areas = map_boxes(logits, np.array([2]), (24, 32), size, margin=0.5)
    np.testing.assert_array_equal(boxes[0], [22, 14, 32, 24])
    assert areas[0] == pytest.approx(3 / 48)


def _numpy_box_prompt(pe, boxes, size):
    """SAM's ``PromptEncoder._embed_boxes`` and ``no_mask_embed`` in NumPy, from its weights."""
    gauss = np.asarray(pe.pe_layer.positional_encoding_gaussian_matrix[...], np.float64)
    corners = (np.asarray(boxes, np.float64).reshape(-1, 2, 2) + 0.5) / size
    proj = 2 * math.pi * ((2 * corners - 1) @ gauss)
    sparse = np.concatenate([np.sin(proj), np.cos(proj)], axis=-1)
    sparse[:, 0] += np.asarray(pe.point_embeddings[2].embedding[...])[0]
    sparse[:, 1] += np.asarray(pe.point_embeddings[3].embedding[...])[0]
    g = pe.image_embedding_size[0]
    dense = np.broadcast_to(np.asarray(pe.no_mask_embed.embedding[...])[0],
                            (len(corners), g, g, sparse.shape[-1]))
    return sparse, dense


@pytest.fixture(scope="module")
def tiny_map_model():
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_litemedsam"), None,
                           LocaliserConfig(num_classes=2, width=8), "map")
    return random_model(cfg, seed=3)


@pytest.mark.slow
def test_box_masks_decode_the_prompt_encoders_box_embedding(tiny_map_model):
    model = tiny_map_model
    size = model.config.sam.frame.size
    rng = np.random.default_rng(0)
    emb = jnp.asarray(rng.normal(size=(2, 64, 64, 256)), jnp.float32)
    boxes = np.array([[[10, 20, 120, 200], [0, 0, 256, 212]],
                      [[33, 44, 55, 66], [100, 8, 250, 90]]], np.float32)
    sparse, dense = _numpy_box_prompt(model.prompt_encoder, boxes.reshape(-1, 4), size)
    got_sparse, got_dense = model.prompt_encoder(boxes=jnp.asarray(boxes.reshape(-1, 4)))
    np.testing.assert_allclose(np.asarray(got_sparse), sparse, atol=2e-5)
    np.testing.assert_allclose(np.asarray(got_dense), dense, atol=1e-6)
    # box_masks decodes exactly those prompts, each against its slice's embedding.
    low, iou = model.box_masks(emb, jnp.asarray(boxes))
    ref, ref_iou = model.mask_decoder(jnp.repeat(emb, 2, axis=0),
                                      model.prompt_encoder.get_dense_pe(),
                                      jnp.asarray(sparse, jnp.float32),
                                      jnp.asarray(dense, jnp.float32), multimask_output=False)
    np.testing.assert_allclose(np.asarray(low), np.asarray(ref[:, 0]).reshape(low.shape),
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(iou), np.asarray(ref_iou[:, 0]).reshape(2, 2),
                               atol=1e-5)


@pytest.mark.slow
def test_segmenter_prompts_the_backbone_with_the_maps_boxes(tiny_map_model):
    """The segmenter on a localiser (map-route) model: presence = the map's component areas, masks = the
    backbone decoding the map's boxes (recomputed here from the model's own parts), labels = the
    most probable kept class above p = 0.5 at the original size (in NumPy)."""
    model = tiny_map_model
    frame = model.config.sam.frame
    image = np.random.default_rng(1).integers(0, 255, (50, 60), np.uint8)
    record = model_input(image, frame)
    seg = Segmenter(model, [1, 2], batch_size=2)
    [(_, labels, areas)] = list(segment_slices(seg, [record]))
    emb = model.embed(jnp.asarray(record["image"])[None])
    logits = np.asarray(model.localise(emb))[0]
    boxes, expected = map_boxes(logits, np.array([1, 2]), record["resized_size"], frame.size,
                                1.0)
    np.testing.assert_allclose(areas, expected, rtol=1e-6)
    low = np.asarray(model.box_masks(emb, jnp.asarray(boxes)[None])[0])[0]
    assert labels.shape == (50, 60)
    resized = Resized(tuple(record["original_size"]), tuple(record["resized_size"]))
    up = np.array(jax.jit(postprocess_masks, static_argnums=(1, 2))(jnp.asarray(low), resized,
                                                                       frame))
    up[expected <= 0] = -np.inf  # a class the map does not find is not drawn
    ref_labels = np.where(up.max(axis=0) > 0, 1 + up.argmax(axis=0), 0)
    np.testing.assert_array_equal(labels, ref_labels)


def test_localiser_loss_against_a_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    labels = np.array([[[0, 0, 1], [0, 0, 0], [2, 0, 0]],
                       [[0, 0, 0], [0, 1, 1], [0, 0, 0]]])
    n = {0: 14, 1: 3, 2: 1}  # cells of each class in the batch (18 in all)
    total = weight = 0.0
    for idx in np.ndindex(labels.shape):
        z = logits[idx].astype(np.float64)
        ce = math.log(sum(math.exp(v) for v in z)) - z[labels[idx]]
        w = math.sqrt(18 / n[int(labels[idx])])
        total, weight = total + w * ce, weight + w
    got = localiser_loss(jnp.asarray(logits), jnp.asarray(labels))
    assert float(got) == pytest.approx(total / weight, rel=1e-6)


def test_grid_labels_at_the_embedding_grid():
    from automedsam_jax.core.config import SamConfig as S
    frame = S.preset("litemedsam").frame  # 256 px, longest side to 256
    label = np.zeros((100, 200), np.uint8)
    label[:50, 100:] = 2                   # top-right quarter
    grid = grid_labels(label, frame, 64)
    # 200 px wide → 256; 100 high → 128 → 32 of the 64 rows; the padding is background.
    assert grid.shape == (64, 64) and grid.dtype == np.int32
    assert (grid[:16, 32:] == 2).all() and (grid[:16, :32] == 0).all()
    assert (grid[16:32] == 0).all() and (grid[32:] == 0).all()


def _train(trainee, batch_source, steps):
    tx = make_tx(OptimConfig(lr=1e-2), 100)
    mesh = data_mesh()
    state, frozen, graphdef = init_state(trainee, tx, mesh)
    before = _numpy(nnx.state(trainee.model))  # copies: the step donates the state
    step = make_train_step(graphdef, tx, mesh)
    it = iter(batch_source)
    for _ in range(steps):
        state, _ = step(state, frozen, shard_batch(next(it), mesh), jax.random.key(0))
    after = nnx.merge(graphdef, jax.device_get(state["params"]), frozen).model
    return before, _numpy(nnx.state(after))


def _numpy(state):
    return {path: np.array(v.get_value()) for path, v in nnx.to_flat_state(state)}


def _changed(before, after, part):
    return {path: not np.array_equal(v, before[path]) for path, v in after.items()
            if path[0] == part}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    builder = prepare(SyntheticConfig(num_cases=4, num_classes=2, height=48, width=48),
                      str(tmp_path_factory.mktemp("loc")))
    return builder.as_data_source("train")


@pytest.mark.slow
def test_frozen_decoder_stays_bit_identical(synthetic):
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_litemedsam"), TINY_CLASS_PROMPT)
    model = random_model(cfg, seed=0)
    batches = train_dataset(synthetic, cfg.sam.frame, cfg.sam.low_res_size,
                            PipelineConfig(), batch_size=2)
    before, after = _train(Trainee(model, LossWeights(LossConfig()), train_decoder=False),
                           batches, steps=3)
    decoder = _changed(before, after, "mask_decoder")
    assert decoder and not any(decoder.values())
    assert any(_changed(before, after, "class_prompt_encoder").values())
    # The same run with the decoder trained moves it: the check can fail.
    model = random_model(cfg, seed=0)
    before, after = _train(Trainee(model, LossWeights(LossConfig())), batches, steps=3)
    assert any(_changed(before, after, "mask_decoder").values())


@pytest.mark.slow
def test_a_localiser_model_trains_the_head_alone(synthetic, tiny_map_model):
    cfg = tiny_map_model.config
    model = random_model(cfg, seed=0)
    batches = train_dataset(synthetic, cfg.sam.frame, cfg.sam.low_res_size,
                            PipelineConfig(negatives=True), batch_size=2, num_classes=2,
                            grid=cfg.sam.embedding_size)
    before, after = _train(Trainee(model, LossWeights(LossConfig())), batches, steps=3)
    assert all(_changed(before, after, "localiser").values())
    for part in ("mask_decoder", "prompt_encoder", "image_encoder"):
        changed = _changed(before, after, part)
        assert changed and not any(changed.values()), part
    # A map-route model holds (and saves) no class prompt encoder: it would never train.
    assert model.class_prompt_encoder is None and not _changed(before, after,
                                                               "class_prompt_encoder")
