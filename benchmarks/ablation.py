"""The demo's ablation table over seeds: each row a real ``train.py`` run per seed, scored on the
demo's validation and test splits, reported as mean ± std over the seeds.

    python benchmarks/ablation.py --seeds 0 1 2                  # every row
    python benchmarks/ablation.py --rows map map_3d --seeds 0 1 2 --out runs/ablation

Each (row, seed) is ``python train.py ROW_ARGS --seed S --workdir OUT/<row>/seed<S>`` then
``python evaluate.py --checkpoint OUT/<row>/seed<S> --split validation|test [EVAL_ARGS]`` (the
model's stored presence rule). A row with ``train_as`` reuses another row's models and only
evaluates them differently (3-D post-processing). Columns: per-organ test DSC, mean test and
validation DSC, presence accuracy over (slice, class) pairs on test and validation, optimizer
steps and the wall time of the training command (embedding cache, presence calibration and
validation included). Re-running reuses finished runs and evaluations (work directories are
kept), so rows and seeds can be added later.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The improved recipe with the diffusion class prompt encoder, at the schedule it was measured
# with before the localiser (39 epochs of batch 2, lr 5e-4: 663 steps; best/ by epoch loss).
_CLASS = ["--recipe", "improved", "--prompt", "class", "--epochs", "39", "--batch-size", "2",
          "--lr", "5e-4", "--eval-every", "0"]


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    train: tuple[str, ...] = ()
    evaluate: tuple[str, ...] = ()
    train_as: str | None = None  # evaluate the models of that row instead of training


ROWS: dict[str, Row] = {
    "paper": Row("paper recipe (docs/method.md)", ("--recipe", "paper")),
    "class": Row("class prompt encoder + learned embedding, negatives, presence", tuple(_CLASS)),
    "class_frozen": Row("the same, mask decoder frozen", tuple(_CLASS) + ("--notrain-decoder",)),
    "probe": Row("linear probe map → box → frozen LiteMedSAM",
                 ("--recipe", "improved", "--width", "0")),
    "map": Row("conv localiser map → box → frozen LiteMedSAM (= `python train.py`)",
               ("--recipe", "improved")),
    "map_augment": Row("the same + 3 augmented variants per slice (zoom, shift, intensity)",
                       ("--recipe", "improved", "--variants", "3")),
    "map_3d": Row("the same + 3-D post-processing", evaluate=("--postprocess", "3d"),
                  train_as="map"),
}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; 0 for one value) of the finite ``values``;
    ``(nan, nan)`` when there are none (a class never scored)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
    return mean, math.sqrt(var)


def run_seed(row: Row, name: str, seed: int, out: Path, data_dir: str) -> dict:
    """Train (unless done or ``row.train_as``) and evaluate one seed of a row → its figures."""
    workdir = out / (row.train_as or name) / f"seed{seed}"
    summary, timing = workdir / "summary.json", workdir / "wall_seconds.json"
    if not summary.exists():
        if row.train_as:
            raise FileNotFoundError(f"row {name!r} evaluates the models of row "
                                    f"{row.train_as!r}: run that row first ({workdir})")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), *row.train, "--seed", str(seed),
                        "--workdir", str(workdir), "--data-dir", data_dir, "--noprogress"],
                       check=True)
        timing.write_text(json.dumps(time.perf_counter() - t0))
    metrics = {}
    for split in ("validation", "test"):
        eval_dir = workdir / f"eval_{name}_{split}"
        if not (eval_dir / "metrics.json").exists():
            subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--checkpoint",
                            str(workdir), "--split", split, "--out", str(eval_dir),
                            *row.evaluate], check=True, stdout=subprocess.DEVNULL)
        metrics[split] = json.loads((eval_dir / "metrics.json").read_text())
    return {"metrics": metrics, "steps": json.loads(summary.read_text())["steps"],
            "wall": json.loads(timing.read_text()) if timing.exists() else math.nan}


def row_figures(seeds: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Per-seed results of one row → ``{column: (mean, std)}`` over the seeds: ``dsc/<class>``
    (test), ``mean/test``, ``mean/validation``, ``presence/test``, ``presence/validation``
    (accuracy), ``steps``, ``wall_min``."""
    test0 = seeds[0]["metrics"]["test"]
    cols: dict[str, list[float]] = {}
    for r in seeds:
        for split, m in r["metrics"].items():
            cols.setdefault(f"mean/{split}", []).append(
                next(iter(m["per_dataset"].values()))["dsc"])
            cols.setdefault(f"presence/{split}", []).append(m["presence"]["accuracy"])
        for cname in test0["per_class"]:
            cols.setdefault(f"dsc/{cname}", []).append(
                r["metrics"]["test"]["per_class"][cname]["dsc"])
        cols.setdefault("steps", []).append(r["steps"])
        cols.setdefault("wall_min", []).append(r["wall"] / 60)
    return {k: mean_std(v) for k, v in cols.items()}


def table(figures: dict[str, dict[str, tuple[float, float]]], class_names: Sequence[str],
          num_seeds: dict[str, int]) -> str:
    """The Markdown table: one row per ablation row, each cell ``mean ± std``."""
    cols = ([f"dsc/{n}" for n in class_names]
            + ["mean/test", "mean/validation", "presence/test", "presence/validation",
               "steps", "wall_min"])
    head = (["row", "seeds"] + [f"{n} DSC" for n in class_names]
            + ["mean DSC (test)", "mean DSC (val)", "presence acc. (test)",
               "presence acc. (val)", "steps", "wall (min)"])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, fig in figures.items():
        cells = [ROWS[name].label if name in ROWS else name, str(num_seeds[name])]
        for c in cols:
            mean, std = fig[c]
            digits = 0 if c == "steps" else 1 if c == "wall_min" else 3
            cells.append("–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--data-dir", default="~/tensorflow_datasets")
    args = p.parse_args(argv)
    figures, class_names, num_seeds = {}, None, {}
    for name in args.rows:
        runs = [run_seed(ROWS[name], name, s, args.out, args.data_dir) for s in args.seeds]
        class_names = class_names or list(runs[0]["metrics"]["test"]["per_class"])
        figures[name], num_seeds[name] = row_figures(runs), len(runs)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    text = table(figures, class_names, num_seeds)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
