"""``SamPredictor``: SAM's interface, masks at the original size, one compilation per shape.

The comparisons with LiteMedSAM's PyTorch pipeline need the ``[torch]`` extra
(``requires_torch``); the predictor's own behaviour is checked on a random model without it.
"""

import numpy as np
import pytest

from automedsam_jax.core.config import SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.preprocess import preprocess_image
from automedsam_jax.io.conversion import sam_from_torch
from automedsam_jax.inference import SamPredictor
from automedsam_references.torch_reference import nchw, randomized_torch_sam

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None


@pytest.fixture(scope="module")
def lite():
    cfg = SamConfig.preset("tiny_litemedsam")
    tm = randomized_torch_sam(cfg, seed=4)
    model = sam_from_torch({k: v.numpy() for k, v in tm.state_dict().items()}, cfg)
    return tm, SamPredictor(model)


@pytest.fixture(scope="module")
def predictor():
    """A SamPredictor of a random tiny LiteMedSAM (no PyTorch needed)."""
    return SamPredictor(random_model("tiny_litemedsam", seed=4))


def _torch_pipeline(tm, image, box):
    """LiteMedSAM's own inference: box scaled to the 256 frame as segment-anything's
    ResizeLongestSide does, LiteMedSAM's postprocess_masks, > 0."""
    from segment_anything.utils.transforms import ResizeLongestSide
    x, r = preprocess_image(image, tm_frame())
    box = ResizeLongestSide(256).apply_boxes(np.asarray([box], np.float32), image.shape[:2])
    with torch.no_grad():
        low = tm(nchw(x[None]), box)
        up = tm.postprocess_masks(low, r.resized_size, image.shape[:2])
    return low.numpy()[0], (up.numpy()[0] > 0)


def tm_frame():
    return SamConfig.preset("tiny_litemedsam").frame


@pytest.mark.slow
@pytest.mark.requires_torch
def test_predict_box_matches_the_pytorch_pipeline(lite):
    tm, pred = lite
    image = np.random.RandomState(0).randint(0, 256, (180, 300)).astype(np.uint8)
    box = [40, 30, 200, 150]
    pred.set_image(image)
    masks, iou, low = pred.predict(boxes=box)
    ref_low, ref_mask = _torch_pipeline(tm, image, box)
    assert masks.shape == (1, 1, 180, 300) and masks.dtype == bool
    assert iou.shape == (1, 1) and low.shape == (1, 1, 256, 256)
    np.testing.assert_allclose(low[0], ref_low, atol=1e-4 * np.abs(ref_low).max())
    assert (masks[0] == ref_mask).mean() > 0.999


@pytest.mark.slow
def test_one_compilation_per_shape(predictor):
    pred = SamPredictor(predictor.model)  # fresh jit caches
    rs = np.random.RandomState(1)
    for _ in range(3):
        pred.set_image(rs.randint(0, 256, (120, 160, 3)).astype(np.uint8))
        pred.predict(boxes=rs.uniform(0, 100, (2, 4)) + [0, 0, 50, 50])
    assert pred._encode._cache_size() == 1
    assert pred._decode._cache_size() == 1
    pred.predict(boxes=[[1, 2, 50, 60]])  # a new number of boxes: one more compilation
    assert pred._decode._cache_size() == 2


@pytest.mark.slow
def test_batch_of_images_equals_one_by_one(predictor):
    pred = predictor
    rs = np.random.RandomState(2)
    images = [rs.randint(0, 256, (100, 140)).astype(np.uint8) for _ in range(2)]
    boxes = np.array([[[10, 10, 80, 60]], [[30, 20, 120, 90]]], np.float32)
    pred.set_images(images)
    masks, iou, low = pred.predict(boxes=boxes)
    assert masks.shape == (2, 1, 1, 100, 140)
    for i in range(2):
        pred.set_image(images[i])
        m1, iou1, low1 = pred.predict(boxes=boxes[i])
        np.testing.assert_allclose(low[i], low1, atol=1e-5)
        np.testing.assert_array_equal(masks[i], m1)


@pytest.mark.requires_torch
def test_points_and_multimask(lite):
    tm, pred = lite
    image = np.random.RandomState(3).rand(64, 80).astype(np.float32)
    pred.set_image(image)
    coords, labels = np.array([[20.0, 30.0], [50.0, 10.0]]), np.array([1, 0])
    masks, iou, low = pred.predict(point_coords=coords, point_labels=labels, multimask_output=True)
    assert masks.shape == (1, 3, 64, 80) and iou.shape == (1, 3)
    from segment_anything.utils.transforms import ResizeLongestSide
    x, _ = preprocess_image(image, tm_frame())
    scaled = ResizeLongestSide(256).apply_coords(coords, image.shape)
    with torch.no_grad():
        emb = tm.image_encoder(nchw(x[None]))
        sp, de = tm.prompt_encoder(points=(torch.tensor(scaled[None], dtype=torch.float32),
                                           torch.tensor(labels[None])), boxes=None, masks=None)
        ref_low, ref_iou = tm.mask_decoder(emb, tm.prompt_encoder.get_dense_pe(), sp, de, True)
    np.testing.assert_allclose(low, ref_low.numpy(), atol=1e-4 * np.abs(ref_low.numpy()).max())
    np.testing.assert_allclose(iou, ref_iou.numpy(), atol=1e-5)


def test_prompt_errors(predictor):
    pred = predictor
    pred.set_image(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="give boxes"):
        pred.predict()
    with pytest.raises(ValueError, match="boxes must have shape"):
        pred.predict(boxes=[1, 2, 3])
    with pytest.raises(ValueError, match="need point_labels"):
        pred.predict(point_coords=[[1, 2]])
