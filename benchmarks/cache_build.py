"""Does building the embedding cache keep the encoder busy? Encoder alone vs the whole build.

    python benchmarks/cache_build.py                       # LiteMedSAM, 64 slices of 256×256
    python benchmarks/cache_build.py --backbone tiny_litemedsam --slices 400

Both in one process, same jitted encoder, same chunk size: (a) the encoder alone on
``--slices`` preprocessed images already in memory (dispatch all, block once); (b)
``EmbeddingCache.open_or_build`` on a synthetic dataset of as many training slices, which also
reads and decodes the records, preprocesses the images and writes the shards. The ratio (b)/(a)
of img/s is 1.0 when the host work hides behind the encoder. Random weights (the speed does not
depend on them); the first chunk of each is a warm-up (compilation) and is not timed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from automedsam_jax.core.config import AutoMedSamConfig, ClassPromptConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.preprocess import preprocess_image
from automedsam_jax.data import prepare
from automedsam_jax.data.embedding_cache import CacheSpec, EmbeddingCache


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="litemedsam")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args(argv)
    model = random_model(AutoMedSamConfig(SamConfig.preset(args.backbone), ClassPromptConfig()))
    frame, chunk = model.config.sam.frame, args.chunk
    embed = jax.jit(lambda x: model.embed(x))
    root = Path(tempfile.mkdtemp(prefix="cache_build_"))
    try:
        cases = -(-args.slices * 10 // 8)
        src = prepare(f"synthetic:num_cases={cases},num_classes=3,height=256,width=256",
                      root / "data").as_data_source("train")
        n = min(args.slices, len(src))
        images = np.stack([preprocess_image(src[i]["image"], frame)[0] for i in range(n)])
        chunks = [images[i:i + chunk] for i in range(0, n - n % chunk, chunk)]
        embed(chunks[0]).block_until_ready()                     # compile
        t0 = time.perf_counter()
        outs = [embed(c) for c in chunks]
        jax.block_until_ready(outs)
        alone = len(chunks) * chunk / (time.perf_counter() - t0)

        subset = [src[i] for i in range(len(chunks) * chunk)]  # the slices timed above
        warm = CacheSpec.of(model, "warm-up", chunk, flips=False, dtype=args.dtype)
        EmbeddingCache.open_or_build(root / "emb", warm, subset[:chunk], frame, embed, chunk,
                                     log=lambda *_: None)
        spec = CacheSpec.of(model, "timed", len(subset), flips=False, dtype=args.dtype)
        t0 = time.perf_counter()
        EmbeddingCache.open_or_build(root / "emb", spec, subset, frame, embed, chunk,
                                     log=lambda *_: None)
        build = len(subset) / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.backbone}, {len(subset)} slices of 256×256, chunk {chunk}, {args.dtype}: "
          f"encoder alone {alone:.2f} img/s, cache build {build:.2f} img/s "
          f"({build / alone:.2f}×)")


if __name__ == "__main__":
    main()
