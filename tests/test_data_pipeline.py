"""The grain training and evaluation pipelines on a synthetic dataset built with tfds."""

from __future__ import annotations

import sys

import grain
import numpy as np
import pytest
from scipy import ndimage

from automedsam_jax.core.config import LITEMEDSAM_FRAME, MEDSAM_FRAME
from automedsam_jax.core.preprocess import mask_box
from automedsam_jax.data import (PipelineConfig, SyntheticConfig, eval_dataset, prepare,
                                 train_dataset)
from automedsam_jax.data.sample import box_jitter_pixels
from automedsam_jax.data.synthetic import synthetic_case

# 64×64 slices and a 256 frame: every resize is an exact 4× (longest side) or 4× (low-res) nearest
# upsampling, so flips commute with resizing and can be checked exactly.
SYN = SyntheticConfig(num_cases=6, num_classes=4, height=64, width=64, depth=6, seed=3)
NO_SHARD = grain.sharding.NoSharding()


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return prepare(SYN, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def records(builder):
    """(case_id, slice_index) → stored train record."""
    src = builder.as_data_source("train")
    return {(r["case_id"].decode(), int(r["slice_index"])): r
            for r in (src[i] for i in range(len(src)))}


def batches(builder, n, frame=LITEMEDSAM_FRAME, batch_size=4, num_epochs=None, **kw):
    """``n`` batches of the train split; ``kw`` are :class:`PipelineConfig` fields."""
    it = iter(train_dataset(builder.as_data_source("train"), frame, 256, PipelineConfig(**kw),
                            batch_size=batch_size, num_epochs=num_epochs, shard=NO_SHARD))
    return [next(it) for _ in range(n)]


def test_batch_layout(builder):
    (b,) = batches(builder, 1)
    expected = {"image": ((4, 256, 256, 3), np.float32), "class_id": ((4,), np.int32),
                "mask": ((4, 256, 256), np.float32), "box": ((4, 4), np.float32),
                "dist": ((4, 256, 256), np.float32), "slice_index": ((4,), np.int32),
                "flips": ((4, 2), np.bool_)}
    for key, (shape, dtype) in expected.items():
        assert b[key].shape == shape and b[key].dtype == dtype, key
    assert b["case_id"].shape == (4,)
    assert set(np.unique(b["mask"])) <= {0.0, 1.0}
    assert "tensorflow" not in sys.modules


def test_samples_match_independent_computation(builder, records):
    """Image, mask, box and distance map of each sample recomputed from the stored record with
    NumPy."""
    J = box_jitter_pixels(LITEMEDSAM_FRAME)
    for b in batches(builder, 3):
        for i in range(4):
            r = records[(b["case_id"][i], int(b["slice_index"][i]))]
            target = r["label"] == b["class_id"][i]
            assert target.any(), "the class prompt must be present in the slice"
            h_flip, v_flip = b["flips"][i]
            if h_flip:
                target = target[:, ::-1]
            if v_flip:
                target = target[::-1]
            # 64 → 256 low-res and input frames: nearest upsampling by 4 is np.repeat.
            expected_mask = np.repeat(np.repeat(target, 4, 0), 4, 1)
            np.testing.assert_array_equal(b["mask"][i], expected_mask)
            inside = ndimage.distance_transform_edt(expected_mask)
            outside = ndimage.distance_transform_edt(~expected_mask)
            np.testing.assert_allclose(b["dist"][i], np.where(expected_mask, inside, outside) / 256)
            tight = mask_box(target) * 4  # input-frame box of the (flipped) mask, 4× scale
            box = b["box"][i]
            assert np.all(box[:2] <= tight[:2]) and np.all(box[:2] >= np.maximum(tight[:2] - J, 0))
            assert np.all(box[2:] >= tight[2:])
            assert np.all(box[2:] <= np.minimum(tight[2:] + J, 256))
            # The image, flipped with the mask: a 4× box-filter upscale repeats each pixel 4×4
            # times, then min-max to [0, 1] over the slice, the same in all 3 channels.
            image = r["image"][:, :, 0].astype(np.float64)
            if h_flip:
                image = image[:, ::-1]
            if v_flip:
                image = image[::-1]
            assert image.max() > image.min()
            up = np.repeat(np.repeat(image, 4, 0), 4, 1)
            expected_image = (up - up.min()) / (up.max() - up.min())
            for channel in range(3):
                np.testing.assert_allclose(b["image"][i][..., channel], expected_image,
                                           rtol=0, atol=1e-6)


def test_flips_are_consistent(builder, records):
    """Without jitter, a flipped sample is the flip of the unflipped one: image, mask, box, dist."""
    flipped = batches(builder, 4, box_jitter=False)
    plain = batches(builder, 4, box_jitter=False, flips=False)
    seen = set()
    for bf, bp in zip(flipped, plain):
        for i in range(4):
            # Same seed → same shuffle and same class choice, only the flips differ.
            assert bf["case_id"][i] == bp["case_id"][i] and bf["class_id"][i] == bp["class_id"][i]
            h_flip, v_flip = bf["flips"][i]
            seen.add((bool(h_flip), bool(v_flip)))
            image, mask, dist = bp["image"][i], bp["mask"][i], bp["dist"][i]
            box = bp["box"][i].copy()
            if h_flip:
                image, mask, dist = image[:, ::-1], mask[:, ::-1], dist[:, ::-1]
                box[[0, 2]] = 252 - box[[2, 0]]  # 64 px wide → 256; last pixel centre 252
            if v_flip:
                image, mask, dist = image[::-1], mask[::-1], dist[::-1]
                box[[1, 3]] = 252 - box[[3, 1]]
            np.testing.assert_allclose(bf["image"][i], image, atol=1e-6)
            np.testing.assert_array_equal(bf["mask"][i], mask)
            np.testing.assert_allclose(bf["dist"][i], dist, atol=1e-7)
            np.testing.assert_allclose(bf["box"][i], box)
            # The flipped mask's box is the flipped box (tight box at the low-res scale 4 px/px).
            np.testing.assert_allclose(mask_box(bf["mask"][i] > 0)[:2], bf["box"][i][:2])
    assert len(seen) >= 3  # flips really happen, in more than one combination


def test_resume_from_iterator_state(builder):
    kw = dict(batch_size=3, seed=5, shard=NO_SHARD)
    source = builder.as_data_source("train")
    it = iter(train_dataset(source, LITEMEDSAM_FRAME, 256, **kw))
    assert len(source) == 19  # train slices with foreground of this synthetic dataset
    for _ in range(4):  # 12 samples: mid-epoch
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(6)]  # samples 12..29 cross the epoch boundary
    resumed = iter(train_dataset(builder.as_data_source("train"), LITEMEDSAM_FRAME, 256, **kw))
    resumed.set_state(state)
    for want, got in zip(expected, (next(resumed) for _ in range(6))):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    other = next(iter(train_dataset(source, LITEMEDSAM_FRAME, 256, **{**kw, "seed": 6})))
    assert not np.array_equal(other["image"], expected[0]["image"])


def test_epoch_shuffle_and_sharding(builder, records):
    source = builder.as_data_source("train")
    n = len(source)
    keys = set(records)

    def epoch(seed, shard):
        return [(b["case_id"][0], int(b["slice_index"][0]))
                for b in train_dataset(source, LITEMEDSAM_FRAME, 256, batch_size=1, seed=seed,
                                       num_epochs=1, shard=shard)]

    order = epoch(0, NO_SHARD)
    assert len(order) == n and set(order) == keys  # every slice exactly once
    assert order != sorted(order, key=list(records).index)  # shuffled, not stored order
    assert epoch(1, NO_SHARD) != order
    # 19 slices over 2 processes: with drop_remainder each gets 9 (lockstep), one is dropped.
    shards = [epoch(0, grain.sharding.ShardOptions(i, 2, drop_remainder=True)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == n // 2
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) < keys
    shards = [epoch(0, grain.sharding.ShardOptions(i, 3)) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(keys)


def test_class_choice_varies(builder, records):
    chosen = {}
    for b in batches(builder, 12, batch_size=8, num_epochs=None):
        for c, z, k in zip(b["case_id"], b["slice_index"], b["class_id"]):
            chosen.setdefault((c, int(z)), set()).add(int(k))
    multi = [key for key, ks in chosen.items() if len(ks) > 1]
    assert multi, "over several epochs some slice must be prompted with different classes"


def test_1024_frame(builder):
    (b,) = batches(builder, 1, frame=MEDSAM_FRAME, batch_size=2)
    assert b["image"].shape == (2, 1024, 1024, 3) and b["mask"].shape == (2, 256, 256)
    assert b["box"].max() <= 1024 and b["box"].min() >= 0


def test_eval_dataset_rebuilds_volumes(builder):
    meta = builder.info.metadata
    ds = eval_dataset(builder.as_data_source("validation"), LITEMEDSAM_FRAME)
    recs = list(ds)
    for case_id in meta["splits"]["validation"]:
        volume = synthetic_case(SYN, int(case_id.split("_")[1]))  # regenerate independently
        slices = [r for r in recs if r["case_id"] == case_id]
        assert [r["slice_index"] for r in slices] == list(range(SYN.depth))
        assert all(r["depth"] == SYN.depth for r in slices)
        np.testing.assert_array_equal(np.stack([r["label"] for r in slices]), volume.label)
        for r, z in zip(slices, range(SYN.depth)):
            np.testing.assert_array_equal(r["classes"], np.flatnonzero(np.bincount(
                volume.label[z].ravel(), minlength=5)[1:]) + 1)
            assert r["image"].shape == (256, 256, 3)
            assert r["original_size"] == (64, 64) and r["resized_size"] == (256, 256)
    assert meta["class_names"] == ["structure_1", "structure_2", "structure_3", "structure_4"]


def test_worker_processes_give_the_same_batches(builder):
    """One worker process (pickled transform, grain's multiprocessing path) reproduces the
    in-process batches."""
    source = builder.as_data_source("train")
    kw = dict(batch_size=2, seed=2, shard=NO_SHARD)
    local = iter(train_dataset(source, LITEMEDSAM_FRAME, 256, **kw))
    remote = iter(train_dataset(source, LITEMEDSAM_FRAME, 256, PipelineConfig(num_workers=1),
                                **kw))
    try:
        for _ in range(3):
            want, got = next(local), next(remote)
            np.testing.assert_array_equal(got["image"], want["image"])
            np.testing.assert_array_equal(got["box"], want["box"])
    finally:
        remote.close()
