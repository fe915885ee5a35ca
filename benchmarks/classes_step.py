"""One class per slice vs every class per slice (``PipelineConfig.classes_per_step``): the JAX
training step on the same (slice, class) pairs, timed in interleaved rounds.

    python benchmarks/classes_step.py [--backbone litemedsam] [--slices 2] [--classes 4] \\
        [--dtype fp32] [--modes train cached] [--repeats 5] [--out classes.json]

Both layouts carry the same B·K pairs (B slices × K classes, every class present, with the same
masks, boxes, distance maps and diffusion noise): ``one-class`` as B·K slices with one class
each (the paper's layout: the frozen image encoder runs B·K times), ``all-classes`` as B slices
with ``class_id`` (B, K) (the encoder runs B times; each embedding is decoded for its K classes,
``automedsam_jax.train.step``). Same pairs, same mean: their losses agree to rounding. In
``train`` the encoder is inside the step; in ``cached`` both decode the same pairs from cached
embeddings (only the input differs: B·K embeddings or B). Protocol as ``frameworks.py`` (JAX:
compile, 1 + WARMUP calls, then ``--repeats`` interleaved rounds of ``--steps`` calls); the
table gives (slice, class) pairs/s per layout and the all/one ratio round by round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig, ClassPromptConfig,
                                        SamConfig)
from automedsam_jax.core.init import random_model
import frameworks
from frameworks import Row, fmt, spread

LAYOUTS = ("one-class", "all-classes")


def layouts(cfg: AutoMedSamConfig, slices: int, classes: int) -> dict[str, dict[str, np.ndarray]]:
    """The same B·K pairs (pair i: slice i // K, class i % K + 1) in both layouts."""
    one = frameworks.make_inputs(cfg, slices * classes)
    one["image"] = np.repeat(one["image"][::classes], classes, axis=0)
    one["class_id"] = np.tile(np.arange(1, classes + 1, dtype=np.int32), slices)
    one["present"] = np.ones(slices * classes, bool)
    every = {k: v.reshape(slices, classes, *v.shape[1:]) for k, v in one.items()}
    every["image"] = one["image"][::classes]
    return {"one-class": one, "all-classes": every}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="litemedsam",
                   choices=["litemedsam", "medsam_vit_b", "tiny_vit_b", "tiny_litemedsam"])
    p.add_argument("--slices", type=int, default=2, help="B")
    p.add_argument("--classes", type=int, default=4, help="K")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--modes", nargs="+", choices=["train", "cached"], default=["train"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=None,
                   help="prepare no row and start no round after this many seconds")
    p.add_argument("--out", default=None, help="write the JSON results here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    start = time.perf_counter()
    deadline = None if args.budget_s is None else start + args.budget_s
    small = args.backbone.startswith("tiny")
    cfg = AutoMedSamConfig(SamConfig.preset(args.backbone),
                           TINY_CLASS_PROMPT if small else ClassPromptConfig())
    model = random_model(cfg, seed=0)
    data = layouts(cfg, args.slices, args.classes)
    embed = jax.jit(lambda m, x: m.embed(x))
    with jax.default_matmul_precision("highest"):
        emb = np.asarray(embed(model, data["all-classes"]["image"]))
    sides = {"one-class": frameworks.JaxSide(cfg, model, data["one-class"],
                                             np.repeat(emb, args.classes, axis=0)),
             "all-classes": frameworks.JaxSide(cfg, model, data["all-classes"], emb)}
    print(f"# {args.backbone}, {args.dtype}: {args.slices} slices × {args.classes} classes = "
          f"{args.slices * args.classes} pairs per step; {args.repeats} interleaved rounds × "
          f"{args.steps} step(s)", flush=True)
    rows, per_mode = [], {}
    for mode in args.modes:
        one, every = frameworks.run_rows(
            [(Row(mode, name, "jax", "jit", args.dtype, steps=args.steps), sides[name].start)
             for name in LAYOUTS], args.repeats, args.steps, deadline)
        rows += [one, every]
        if one.ok and every.ok:
            per_mode[mode] = [a / b for a, b in zip(every.images_per_s, one.images_per_s)]
    text = table(rows, per_mode)
    print(text)
    result = {"args": vars(args), "rows": [r.summary() for r in rows],
              "all_over_one": per_mode, "table": text, "seconds": time.perf_counter() - start,
              "command": "python benchmarks/classes_step.py "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def table(rows: list[Row], per_mode: dict[str, list[float]]) -> str:
    """Markdown: pairs/s per layout and mode, then all/one per mode."""
    lines = ["| mode | layout | pairs/s (median of rounds) | min–max | rounds | ms/step | "
             "compile (s) | loss (N) | all/one (median of rounds) | min–max |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.ok:
            lines.append(f"| {r.mode} | {r.row} | {r.error or 'no round timed'} |" + " |" * 7)
            continue
        ratio = per_mode.get(r.mode) if r.row == "all-classes" else None
        lines.append(f"| {r.mode} | {r.row} | {r.median():.3g} | {spread(r.images_per_s)} | "
                     f"{len(r.times_s)} | {1e3 * r.images_per_call / r.median():.0f} | "
                     f"{fmt(r.compile_s)} | {r.loss:.6g} ({r.loss_steps}) | "
                     + (f"{statistics.median(ratio):.2f}× | {spread(ratio, '.2f')} |" if ratio
                        else "| |"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
