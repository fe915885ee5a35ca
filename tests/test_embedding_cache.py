"""The embedding cache as stored data: written once, reused by the next run without embedding,
rebuilt when any input changes or a build was cut short, bfloat16 or float32, refused up front
when the disk lacks room — against embeddings computed here image by image."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.preprocess import preprocess_image
from automedsam_jax.data import SyntheticConfig, prepare
from automedsam_jax.data.embedding_cache import SPEC_FILE, CacheSpec, EmbeddingCache
from automedsam_jax.data.sample import flip
from automedsam_jax.io.errors import UsageError

CFG = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    src = prepare(SyntheticConfig(num_cases=3, num_classes=2, height=32, width=32),
                  root / "data").as_data_source("train")
    model = random_model(CFG, 2)
    return root, src, model, jax.jit(lambda x: model.embed(x))


class Counting:
    """The embed function, counting the images it is given."""

    def __init__(self, fn):
        self.fn, self.images = fn, 0

    def __call__(self, x):
        self.images += len(x)
        return self.fn(x)


def _build(root, spec, src, embed, chunk=3):
    return EmbeddingCache.open_or_build(root, spec, src, CFG.sam.frame, embed, chunk=chunk,
                                        log=lambda *_: None)


def test_written_once_then_reused(setup, tmp_path):
    _, src, model, embed = setup
    spec = CacheSpec.of(model, "synthetic/train", len(src))
    first = Counting(embed)
    cache = _build(tmp_path, spec, src, first)
    assert len(cache) == 4 * len(src) and first.images >= 4 * len(src)
    # every (slice, flip) against the encoder run on that one image here
    for i in (0, len(src) - 1):
        r = src[i]
        for hf, vf in ((False, False), (True, False), (False, True), (True, True)):
            x = preprocess_image(flip(r["image"], hf, vf), CFG.sam.frame)[0]
            want = np.asarray(embed(x[None]))[0]
            batch = {"case_id": [r["case_id"]], "slice_index": [r["slice_index"]],
                     "flips": np.array([[hf, vf]])}
            # (the batch is embedded image by image in a loop on a CPU: rounding-level differences)
            np.testing.assert_allclose(cache.lookup(batch)[0], want, rtol=1e-5, atol=1e-5)
    again = Counting(embed)
    reused = _build(tmp_path, spec, src, again)
    assert again.images == 0 and len(reused) == len(cache)  # a second run embeds nothing


def test_a_changed_input_is_a_new_cache(setup, tmp_path):
    _, src, model, embed = setup
    spec = CacheSpec.of(model, "synthetic/train", len(src))
    _build(tmp_path, spec, src, embed)
    other_weights = random_model(CFG, 3)
    changed = [CacheSpec.of(other_weights, "synthetic/train", len(src)),
               dataclasses.replace(spec, flips=False), dataclasses.replace(spec, dtype="bfloat16"),
               dataclasses.replace(spec, encoder_dtype="bfloat16"),
               dataclasses.replace(spec, num_slices=len(src) - 1)]
    assert len({spec.key(), *(c.key() for c in changed)}) == 1 + len(changed)
    counting = Counting(embed)
    _build(tmp_path, changed[1], src, counting)
    assert counting.images >= len(src)  # no flips: another cache, built anew
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spec.key(), changed[1].key()])


def test_an_interrupted_build_is_rebuilt(setup, tmp_path):
    _, src, model, embed = setup
    spec = CacheSpec.of(model, "synthetic/train", len(src), flips=False)
    _build(tmp_path, spec, src, embed)
    (tmp_path / spec.key() / SPEC_FILE).unlink()       # as if killed before the end
    counting = Counting(embed)
    cache = _build(tmp_path, spec, src, counting)
    assert counting.images >= len(src) and len(cache) == len(src)
    assert json.loads((tmp_path / spec.key() / SPEC_FILE).read_text())["counts"] == [len(src)]


def test_bfloat16_storage_is_the_float32_embedding_rounded(setup, tmp_path):
    _, src, model, embed = setup
    f32 = _build(tmp_path, CacheSpec.of(model, "synthetic/train", len(src), flips=False), src,
                 embed)
    bf16 = _build(tmp_path, CacheSpec.of(model, "synthetic/train", len(src), flips=False,
                                         dtype="bfloat16"), src, embed)
    batch = {"case_id": [src[i]["case_id"] for i in range(len(src))],
             "slice_index": [src[i]["slice_index"] for i in range(len(src))],
             "flips": np.zeros((len(src), 2), bool)}
    exact, rounded = f32.lookup(batch), bf16.lookup(batch)
    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded, exact.astype(jnp.bfloat16).astype(np.float32))
    assert not np.array_equal(rounded, exact)
    assert len(bf16.source[0]) * 2 == len(f32.source[0]) == 4 * exact[0].size  # bytes stored


def test_no_room_is_refused_before_embedding(setup, tmp_path):
    _, src, model, embed = setup
    spec = dataclasses.replace(CacheSpec.of(model, "synthetic/train", len(src)),
                               shape=(1 << 16, 1 << 16, 256))  # 4 TiB per embedding
    counting = Counting(embed)
    with pytest.raises(UsageError, match=r"the embedding cache needs .* GiB in .* but the disk "
                                         r"has .* GiB free: pass --cache-dir on a larger disk, "
                                         r"--cache-dtype bfloat16 \(half the size\), or train "
                                         "with --no-cache-embeddings"):
        _build(tmp_path, spec, src, counting)
    assert counting.images == 0 and not any(tmp_path.iterdir())
