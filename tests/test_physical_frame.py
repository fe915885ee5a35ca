"""The physical scale (FrameConfig.spacing): a slice of known spacing to its mm canvas and back."""

import numpy as np
import pytest

from automedsam_jax.core.config import FrameConfig
from automedsam_jax.core.preprocess import (from_physical, model_input, physical_placement,
                                            to_physical)

FRAME = FrameConfig(size=256, resize="longest", interpolation="bicubic", spacing=1.5)


def _organs(shape, spacing):
    """Two disks of 40 mm and 25 mm radius, placed in mm from the slice centre."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    y_mm, x_mm = (yy - cy) * spacing[0], (xx - cx) * spacing[1]
    lab = np.zeros(shape, np.int32)
    lab[(y_mm + 30) ** 2 + (x_mm - 40) ** 2 <= 40 ** 2] = 1
    lab[(y_mm - 60) ** 2 + (x_mm + 50) ** 2 <= 25 ** 2] = 2
    return lab


def test_placement_is_the_slice_extent_in_mm_over_the_frame_spacing():
    # 512 px of 0.98 mm = 501.8 mm → 334.5 canvas px of 1.5 mm, centred on 256: cropped by 39
    place = physical_placement((512, 512), (0.98, 0.98), FRAME)
    assert place.size == (335, 335) and place.offset == (-40, -40)
    # 101 × 122 px of 3.1 mm → 209 × 252 px, padded
    place = physical_placement((101, 122), (3.1, 3.1), FRAME)
    assert place.size == (209, 252) and place.offset == (23, 2)


@pytest.mark.parametrize("shape,spacing", [((512, 512), (0.8, 0.8)),    # cropped
                                           ((300, 360), (0.98, 0.98)),  # cropped in x
                                           ((101, 122), (3.1, 3.1))])   # padded
def test_labels_keep_their_area_in_mm2_on_the_canvas(shape, spacing):
    lab = _organs(shape, spacing)
    _, _, canvas_lab = to_physical(np.zeros(shape, np.float32), spacing, FRAME, label=lab)
    for k, radius in ((1, 40), (2, 25)):
        area = (canvas_lab == k).sum() * FRAME.spacing ** 2
        assert abs(area - np.pi * radius ** 2) / (np.pi * radius ** 2) < 0.04, k


@pytest.mark.parametrize("shape,spacing", [((300, 360), (0.98, 0.98)),
                                           ((101, 122), (3.1, 3.1))])
def test_a_label_map_to_the_canvas_and_back_is_the_original(shape, spacing):
    """One-hot logits on the canvas, back through from_physical, argmax: the original labels up
    to one canvas pixel at the edges (DSC ≥ 0.97 per organ); the cropped border becomes
    background."""
    lab = _organs(shape, spacing)
    _, place, canvas_lab = to_physical(np.zeros(shape, np.float32), spacing, FRAME, label=lab)
    logits = np.stack([np.where(canvas_lab == k, 10.0, -10.0) for k in (0, 1, 2)])
    back = np.asarray(from_physical(logits.astype(np.float32), place, fill=-1e4))
    assert back.shape == (3, *shape)
    got = back.argmax(0)
    for k in (1, 2):
        a, b = got == k, lab == k
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.97, k
    # the canvas's 256 × 1.5 = 384 mm: the 360 × 0.98 = 353 mm wide slice fits, so nothing is
    # cut; where the canvas crops (none here) logits are `fill`
    assert np.isfinite(back).all()


def test_the_cropped_border_comes_back_as_fill():
    shape, spacing = (512, 512), (0.98, 0.98)  # 502 mm > 384 mm canvas
    _, place = to_physical(np.zeros(shape, np.float32), spacing, FRAME)
    back = np.asarray(from_physical(np.zeros((1, 256, 256), np.float32), place, fill=-1e4))
    # 384 mm of canvas over 502 mm: about 59 px of 0.98 mm each side lie off the canvas
    assert (back[0, :, :50] < -1e3).all() and (back[0, :, -50:] < -1e3).all()
    assert (back[0, 100:400, 100:400] == 0).all()


def test_model_input_takes_the_canvas_only_with_a_spacing():
    img = np.random.default_rng(0).normal(size=(101, 122)).astype(np.float32)
    plain = model_input(img, FRAME)
    assert "physical" not in plain and plain["resized_size"] == (int(101 * 256 / 122 + 0.5), 256)
    phys = model_input(img, FRAME, spacing_yx=(3.1, 3.1))
    assert phys["physical"].size == (209, 252) and phys["image"].shape == (256, 256, 3)
    assert phys["original_size"] == (256, 256) and phys["resized_size"] == (256, 256)
