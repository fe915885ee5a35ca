"""Per-sample preprocessing, intensities, labels and splits against independent computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from automedsam_jax.core.config import LITEMEDSAM_FRAME, MEDSAM_FRAME, SAM_FRAME
from automedsam_jax.core.preprocess import mask_box
from automedsam_jax.data.labels import body_midline, present_classes, split_by_midline, to_class_ids
from automedsam_jax.data.presets import ABDOMENCT1K, BRATS, CHESTXML, PRESETS
from automedsam_jax.data.sample import (box_jitter_pixels, class_sample, jitter_box,
                                        shape_distance_map)
from automedsam_jax.data.splits import split_cases
from automedsam_jax.io.intensity import ct_window_to_uint8, mr_percentile_to_uint8


def nearest_resize(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour with half-pixel centres, written out with numpy indexing."""
    (H, W), (h, w) = mask.shape, size
    rows = np.floor((np.arange(h) + 0.5) * H / h).astype(int)
    cols = np.floor((np.arange(w) + 0.5) * W / w).astype(int)
    return mask[rows][:, cols]


def brute_force_boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the nearest pixel of the other class, by exhaustive search."""
    fg, bg = np.argwhere(mask), np.argwhere(~mask)
    out = np.zeros(mask.shape)
    for (y, x) in np.ndindex(mask.shape):
        other = bg if mask[y, x] else fg
        out[y, x] = np.sqrt(((other - (y, x)) ** 2).sum(1)).min()
    return out


def test_ct_window_known_values():
    hu = np.array([-1000, -160, 40, 240, 1000, -60])
    # level 40, width 400: [-160, 240] → [0, 255]; 40 is the middle (127.5 rounds to 128);
    # -60 is a quarter of the way: 63.75 → 64.
    np.testing.assert_array_equal(ct_window_to_uint8(hu), [0, 0, 128, 255, 255, 64])


def test_mr_percentile_known_values():
    vol = np.concatenate([np.zeros(100), np.arange(1, 1001)]).astype(np.float32)
    out = mr_percentile_to_uint8(vol)
    # numpy's linear percentiles of 1..1000: 0.5 % → 5.995, 99.5 % → 995.005.
    lo, hi = 5.995, 995.005
    assert out.dtype == np.uint8
    assert np.all(out[:100] == 0)  # background stays 0
    assert out[100 + 499] == round((500 - lo) / (hi - lo) * 255)  # value 500
    assert out[100] == 0 and out[-1] == 255  # clipped ends
    assert np.all(np.diff(out[100:].astype(int)) >= 0)  # monotonic


def test_mask_box_and_jitter():
    mask = np.zeros((40, 50), bool)
    mask[10:21, 5:31] = True  # rows 10..20, cols 5..30
    np.testing.assert_array_equal(mask_box(mask), [5, 10, 30, 20])
    with pytest.raises(ValueError, match="empty"):
        mask_box(np.zeros((4, 4), bool))
    assert box_jitter_pixels(MEDSAM_FRAME) == 20 and box_jitter_pixels(LITEMEDSAM_FRAME) == 5
    rng = np.random.default_rng(0)
    box = np.array([100.0, 200.0, 300.0, 400.0], np.float32)
    draws = np.stack([jitter_box(box, 20, (1024, 1024), rng) for _ in range(400)])
    shift = np.abs(draws - box)
    assert shift.min() == 0 and shift.max() == 20
    assert np.all(draws[:, :2] <= box[:2]) and np.all(draws[:, 2:] >= box[2:])  # outwards only
    assert np.all(shift == np.round(shift))  # integer pixels
    clipped = np.stack([jitter_box(np.array([2, 3, 250, 254], np.float32), 5, (255, 252), rng)
                        for _ in range(100)])
    assert clipped[:, 0].min() >= 0 and clipped[:, 1].min() >= 0
    assert clipped[:, 2].max() <= 252 and clipped[:, 3].max() <= 255


def test_shape_distance_map_matches_brute_force():
    mask = np.zeros((24, 24), bool)
    mask[5:15, 4:12] = True
    mask[15:19, 8:20] = True
    d = shape_distance_map(mask)
    assert d.dtype == np.float32 and d.shape == (24, 24)
    np.testing.assert_allclose(d, brute_force_boundary_distance(mask) / 24, rtol=1e-6)
    assert d[mask].min() == pytest.approx(1 / 24)  # boundary pixels are one pixel from the edge
    np.testing.assert_array_equal(shape_distance_map(np.zeros((8, 8), bool)), 0)


@pytest.mark.parametrize("frame", [LITEMEDSAM_FRAME, dataclasses.replace(MEDSAM_FRAME, size=256),
                                   dataclasses.replace(SAM_FRAME, size=128)],
                         ids=["litemedsam", "medsam256", "sam128"])
def test_class_sample_against_numpy(frame):
    H, W = 48, 64
    image = np.random.default_rng(1).integers(0, 256, (H, W, 1), dtype=np.uint8)
    label = np.zeros((H, W), np.uint8)
    label[8:30, 10:40] = 2  # rows 8..29, cols 10..39
    label[35:40, 50:60] = 1
    out = class_sample(image, label, 2, frame, 64)
    S = frame.size
    h, w = (S, S) if frame.resize == "stretch" else (round(H * S / W), S)
    sy, sx = h / H, w / W
    np.testing.assert_allclose(out["box"], [10 * sx, 8 * sy, 39 * sx, 29 * sy], rtol=1e-6)
    # Low-res frame: the image's extent scaled to 64 px, nearest neighbour, zero padding.
    hl, wl = round(h * 64 / S), round(w * 64 / S)
    expected = np.zeros((64, 64), np.float32)
    expected[:hl, :wl] = nearest_resize(label == 2, (hl, wl))
    np.testing.assert_array_equal(out["mask"], expected)
    np.testing.assert_allclose(out["dist"], brute_force_boundary_distance(expected > 0) / 64,
                               rtol=1e-6)
    assert out["image"].shape == (S, S, 3) and out["image"].dtype == np.float32
    assert np.all(out["image"][h:] == 0)  # bottom padding of the longest-side frames
    jittered = class_sample(image, label, 2, frame, 64, np.random.default_rng(3))["box"]
    J = box_jitter_pixels(frame)
    assert np.all(jittered[:2] <= out["box"][:2]) and np.all(jittered[:2] >= out["box"][:2] - J)
    assert np.all(jittered[2:] >= out["box"][2:]) and np.all(jittered[2:] <= out["box"][2:] + J)


def test_label_maps():
    raw = np.array([[0, 1, 2], [3, 4, 0]], np.uint8)
    np.testing.assert_array_equal(to_class_ids(raw, ABDOMENCT1K), raw)
    np.testing.assert_array_equal(to_class_ids(raw, BRATS), raw > 0)
    np.testing.assert_array_equal(to_class_ids(np.array([0, 255, 1], np.uint8), CHESTXML), [0, 1, 1])
    with pytest.raises(ValueError, match=r"unexpected label values \[5\]"):
        to_class_ids(np.array([0, 5, 1], np.uint8), ABDOMENCT1K)
    # The demo keeps five TotalSegmentator organs and sends every other id to background.
    np.testing.assert_array_equal(to_class_ids(np.array([5, 1, 7, 2, 3, 4, 117], np.uint8),
                                               PRESETS["demo"]), [1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(present_classes(np.array([[0, 3], [3, 1]], np.uint8)), [1, 3])


def test_kidney_midline_split():
    image = np.zeros((2, 20, 30, 1), np.uint8)
    image[:, 4:16, 6:26] = 100  # body spans columns 6..25 → midline 15.5
    assert body_midline(image) == pytest.approx(15.5)
    label = np.zeros((2, 20, 30), np.uint8)
    label[:, 8:12, 8:12] = 2   # image left = patient's right
    label[:, 8:12, 19:23] = 2  # image right = patient's left
    label[:, 2:4, 2:28] = 1
    out = split_by_midline(label, 15.5, paired_class=2, left_class=5)
    assert np.all(out[:, 8:12, 8:12] == 2) and np.all(out[:, 8:12, 19:23] == 5)
    np.testing.assert_array_equal(out == 1, label == 1)


def test_split_cases_deterministic_and_disjoint():
    ids = [f"CT_case_{i:03d}" for i in range(50)]
    a = split_cases(ids)
    assert a == split_cases(list(reversed(ids)))  # independent of the order given
    assert sorted(sum(a.values(), [])) == sorted(ids)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (40, 5, 5)
    # With few cases, validation and test still get one each.
    small = split_cases(["a", "b", "c"])
    assert all(len(v) == 1 for v in small.values())
    two = split_cases(["x", "y"])  # one to train on, one to score
    assert [len(two[s]) for s in ("train", "validation", "test")] == [1, 0, 1]
    assert sorted(two["train"] + two["test"]) == ["x", "y"]
    assert split_cases(["x"]) == {"train": ["x"], "validation": [], "test": []}
