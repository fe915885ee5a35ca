"""The prompt seam (automedsam_jax/core/routes): the registry and the parts each route's models
hold, and the ``refine`` route — its starting prompt against SAM's prompt encoder written out in
NumPy, its box map and training start boxes by hand, an untrained refiner decoding exactly the
map route's masks, and training that moves the localiser and refiner only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, LocaliserConfig, LossConfig,
                                        SamConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights
from automedsam_jax.core.modeling.prompt_refiner import box_map, init_prompt_refiner
from automedsam_jax.core.preprocess import model_input
from automedsam_jax.core.routes import ROUTES, get_route, model_config
from automedsam_jax.core.routes.refine import START_ERROR_CELLS, start_boxes
from automedsam_jax.data import PipelineConfig, SyntheticConfig, prepare, train_dataset
from automedsam_jax.inference import Segmenter, segment_slices
from automedsam_jax.train.optim import Trainee

from test_localiser import _changed, _numpy_box_prompt, _train

SAM = SamConfig.preset("tiny_litemedsam")
LOC = LocaliserConfig(num_classes=2, width=8)


def test_registry_and_the_parts_each_route_holds():
    assert set(ROUTES) == {"class", "map", "refine", "box"}
    with pytest.raises(ValueError, match="unknown prompt route 'nosuch'"):
        get_route("nosuch")
    cfg = model_config(SAM, "map", TINY_CLASS_PROMPT, LOC)
    assert cfg.class_prompt is None and cfg.localiser == LOC
    cfg = model_config(SAM, "class", TINY_CLASS_PROMPT, LOC)
    assert cfg.localiser is None and cfg.class_prompt == TINY_CLASS_PROMPT
    with pytest.raises(ValueError, match="needs localiser"):
        model_config(SAM, "refine", TINY_CLASS_PROMPT, None)
    with pytest.raises(ValueError, match="makes no AutoMedSAM"):
        model_config(SAM, "box", TINY_CLASS_PROMPT, LOC)
    model = random_model(model_config(SAM, "refine", TINY_CLASS_PROMPT, LOC), seed=0)
    assert model.class_prompt_encoder is None
    assert model.localiser is not None and model.prompt_refiner is not None


def test_box_map_is_the_covered_fraction_of_each_cell():
    # 8 cells of 4 px over a 32 px frame; box x 2..9 (cells 0-2), y 4..10 (cells 1-2)
    m = np.asarray(box_map(jnp.array([[2.0, 4.0, 9.0, 10.0]]), 8, 32))[0, ..., 0]
    ys = np.array([0, 1, 0.5, 0, 0, 0, 0, 0], float)        # rows: [4,8) fully, [8,10) half
    xs = np.array([0.5, 1, 0.25, 0, 0, 0, 0, 0], float)     # cols: [2,4) half, [4,8), [8,9)
    np.testing.assert_allclose(m, np.outer(ys, xs), atol=1e-6)


def test_start_boxes_move_out_by_the_margin_with_the_stated_error():
    cell, margin = 4.0, 1.0
    boxes = jnp.tile(jnp.array([[100.0, 80.0, 140.0, 120.0]]), (4000, 1))
    out = np.asarray(start_boxes(boxes, jax.random.key(0), cell, margin, 256))
    np.testing.assert_allclose(out.mean(0), [96, 76, 144, 124], atol=0.3)
    np.testing.assert_allclose(out.std(0), START_ERROR_CELLS * cell, rtol=0.05)
    # clipped to the frame and at least a pixel wide
    edge = np.asarray(start_boxes(jnp.array([[0.0, 0.0, 2.0, 256.0]]), jax.random.key(1), cell,
                                  margin, 256))[0]
    assert edge[0] >= 0 and edge[1] >= 0 and edge[3] <= 256 and edge[2] >= edge[0] + 1


@pytest.fixture(scope="module")
def refine_model():
    return random_model(model_config(SAM, "refine", TINY_CLASS_PROMPT, LOC), seed=5)


@pytest.mark.slow
def test_an_untrained_refiner_starts_at_the_box_prompt(refine_model):
    """The refiner's starting prompt is SAM's prompt encoder's output for that box (written out
    in NumPy), and with its zero-initialised projections it returns exactly that prompt."""
    model = refine_model
    dim, grid, size = 256, SAM.embedding_size, SAM.image_size
    model.prompt_refiner = init_prompt_refiner(TINY_CLASS_PROMPT, dim, grid, size, seed=2)
    boxes = np.array([[10, 20, 120, 200], [33, 44, 55, 66]], np.float32)
    emb = jnp.asarray(np.random.default_rng(0).normal(size=(2, grid, grid, dim)), jnp.float32)
    sparse, dense = model.refine(emb, jnp.array([1, 2]), jnp.asarray(boxes),
                                 key=jax.random.key(0))
    ref_sparse, ref_dense = _numpy_box_prompt(model.prompt_encoder, boxes, size)
    np.testing.assert_allclose(np.asarray(sparse), ref_sparse, atol=2e-5)
    np.testing.assert_allclose(np.asarray(dense), ref_dense, atol=1e-6)
    # The class prompt encoder does run (its correction is what the zero projections scale).
    delta = model.prompt_refiner.class_prompt_encoder(emb, jnp.array([1, 2]), extra=box_map(
        jnp.asarray(boxes), grid, size))
    assert float(jnp.abs(delta[0]).max()) > 0


@pytest.mark.slow
def test_an_untrained_refine_model_segments_as_the_map_route(refine_model):
    """Same localiser, zero projections: the refine route's masks are the backbone's masks for
    the map's boxes (the map route on the same parts)."""
    model = refine_model
    model.prompt_refiner = init_prompt_refiner(TINY_CLASS_PROMPT, 256, SAM.embedding_size,
                                               SAM.image_size, seed=1)
    image = np.random.default_rng(1).integers(0, 255, (50, 60), np.uint8)
    record = model_input(image, SAM.frame)
    refined = list(segment_slices(Segmenter(model, [1, 2], batch_size=2), [record]))
    mapped = list(segment_slices(Segmenter(model, [1, 2], batch_size=2,
                                           route=get_route("map")), [record]))
    np.testing.assert_array_equal(refined[0][1], mapped[0][1])
    np.testing.assert_array_equal(refined[0][2], mapped[0][2])


@pytest.mark.slow
def test_the_refine_route_trains_localiser_and_refiner_only(tmp_path):
    src = prepare(SyntheticConfig(num_cases=4, num_classes=2, height=48, width=48),
                  str(tmp_path)).as_data_source("train")
    cfg = model_config(SAM, "refine", TINY_CLASS_PROMPT, LOC)
    batches = train_dataset(src, SAM.frame, SAM.low_res_size, PipelineConfig(negatives=True),
                            batch_size=2, num_classes=2, grid=SAM.embedding_size)
    model = random_model(cfg, seed=0)
    before, after = _train(Trainee(model, LossWeights(LossConfig()), train_decoder=False),
                           batches, steps=2)
    for part in ("localiser", "prompt_refiner"):
        assert any(_changed(before, after, part).values()), part
    for part in ("mask_decoder", "prompt_encoder", "image_encoder"):
        changed = _changed(before, after, part)
        assert changed and not any(changed.values()), part
    model = random_model(cfg, seed=0)
    before, after = _train(Trainee(model, LossWeights(LossConfig()), train_decoder=True),
                           batches, steps=2)
    assert any(_changed(before, after, "mask_decoder").values())
