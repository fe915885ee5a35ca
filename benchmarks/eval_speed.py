"""Evaluation throughput of AutoMedSAM: slices per second with every class decoded.

    python benchmarks/eval_speed.py [--presets litemedsam medsam_vit_b] [--classes 5]
                                    [--batch-size 4] [--batches 2] [--size 512]
                                    [--budget-s SECONDS] [--out eval.json]

What is timed is what ``evaluate.py`` does per slice: host preprocessing of a ``size × size``
uint8 slice to the preset's input frame, the jitted batched model call (image encoder once per
slice, the K class prompts decoded against that embedding), and the per-slice step back to the
original frame (upsampling the K masks, label map) — :func:`automedsam_jax.evaluation.
segment_slices`. Metrics (NSD distance transforms) are not included. Weights are random
(``core.init.random_model``; the speed does not depend on them); the ``tiny_*`` presets (tests)
get the tiny class prompt widths. One warm-up batch
compiles everything first (its time is reported apart), then ``--batches`` full batches are timed.

Where the time goes (ms per slice, one more batch run phase by phase, each synchronised):
preprocessing on the host, the model call (of which the image encoder alone, jitted apart),
and the step back to the original frame (upsampling the K masks to ``size``², label map, areas).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from automedsam_jax.core.backend import image_by_image
from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, ClassPromptConfig,
                                        SamConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.preprocess import model_input
from automedsam_jax.inference import Segmenter, segment_slices


def _records(n: int, size: int, frame, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield model_input(rng.integers(0, 256, (size, size), np.uint8), frame)


def bench(preset: str, classes: int, batch_size: int, batches: int, size: int) -> dict:
    prompt = TINY_CLASS_PROMPT if preset.startswith("tiny") else ClassPromptConfig()
    model = random_model(AutoMedSamConfig(SamConfig.preset(preset), prompt))
    seg = Segmenter(model, range(1, classes + 1), batch_size)
    t = time.perf_counter()
    for _ in segment_slices(seg, _records(batch_size, size, seg.frame)):
        pass
    warmup = time.perf_counter() - t
    n = batches * batch_size
    t = time.perf_counter()
    for _, labels, _ in segment_slices(seg, _records(n, size, seg.frame, seed=1)):
        assert labels.shape == (size, size)
    seconds = time.perf_counter() - t
    return dict(preset=preset, frame=seg.frame.size, slices=n, seconds=seconds,
                rate=n / seconds, warmup=warmup, **phases(model, seg, batch_size, size))


def phases(model, seg: Segmenter, batch_size: int, size: int) -> dict[str, float]:
    """Milliseconds per slice of each phase of one batch, run one after the other."""
    raw = np.random.default_rng(2).integers(0, 256, (batch_size, size, size), np.uint8)
    # The encoder as the segmenter runs it (slice by slice on a CPU).
    embed = jax.jit(image_by_image(lambda m, x: m.embed(x), in_axes=(None, 0)))
    t = time.perf_counter()
    records = [model_input(r, seg.frame) for r in raw]
    pre = time.perf_counter() - t
    images = np.stack([r["image"] for r in records])
    jax.block_until_ready(embed(model, images))  # compiles
    t = time.perf_counter()
    jax.block_until_ready(embed(model, images))
    encoder = time.perf_counter() - t
    t = time.perf_counter()
    logits, valid, _ = seg.run_batch(records)
    jax.block_until_ready(logits)
    call = time.perf_counter() - t
    t = time.perf_counter()
    for i, r in enumerate(records):
        seg.to_labels(logits[i], valid[i], r)
    post = time.perf_counter() - t
    return {f"{k}_ms": 1e3 * v / batch_size for k, v in
            dict(pre=pre, model=call, encoder=encoder, post=post).items()}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["litemedsam", "medsam_vit_b"])
    p.add_argument("--classes", type=int, default=5, help="classes decoded per slice")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--batches", type=int, default=2, help="timed batches after the warm-up")
    p.add_argument("--size", type=int, default=512, help="original slice side (px)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="start no preset after this many seconds")
    p.add_argument("--out", default=None, help="write the JSON results here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    lines = [f"# evaluation throughput, {args.classes} classes per slice, {args.size}² uint8 "
             f"slices, batch {args.batch_size}, float32, random weights",
             f"# {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind} "
             f"× {jax.device_count()}, jax {jax.__version__}\n",
             "| preset | input | slices timed | seconds | slices/s | warm-up batch, compiling (s) "
             "| ms/slice: preprocess | model call | of which encoder | back to original frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = []
    for name in args.presets:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            lines.append(f"| {name} | skipped: time budget (--budget-s) spent |" + " |" * 8)
        else:
            r = bench(name, args.classes, args.batch_size, args.batches, args.size)
            rows.append(r)
            lines.append(f"| {r['preset']} | {r['frame']}² | {r['slices']} | {r['seconds']:.1f} | "
                         f"{r['rate']:.3f} | {r['warmup']:.1f} | {r['pre_ms']:.0f} | "
                         f"{r['model_ms']:.0f} | {r['encoder_ms']:.0f} | {r['post_ms']:.0f} |")
        print(lines[-1], flush=True)
    result = {"args": vars(args), "rows": rows, "table": "\n".join(lines)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
