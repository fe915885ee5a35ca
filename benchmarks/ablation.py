"""The demo's ablation table over seeds: each row a real ``train.py`` run per seed, scored on the
demo's plain and shifted validation and test blocks, reported as mean ± std over the seeds.

    python benchmarks/ablation.py --seeds 0 1 2                  # the default rows
    python benchmarks/ablation.py --rows map generalise --seeds 0 1 2 --out runs/ablation

Each (row, seed) is ``python train.py ROW_ARGS --seed S --workdir OUT/<row>/seed<S>`` then, for
each split (validation, test) and each rendering of it (``plain``: ``--dataset demo:shift=none``,
the training patient's slices as they are; ``shifted``: ``--dataset demo:shift=all``, the same
blocks as another scanner and patient present them, docs/method.md#shifted-evaluation),
``python evaluate.py --checkpoint OUT/<row>/seed<S> --split SPLIT --dataset ... [EVAL_ARGS]``
(the model's stored presence rule). A row with ``train_as`` reuses another row's models and only
evaluates them differently (3-D post-processing). Columns: mean DSC and presence accuracy over
(slice, class) pairs of each of the four evaluations, optimizer steps, the wall time of the
training command (embedding cache, presence calibration and validation included); a second
table gives per-organ test DSC, plain and shifted. Re-running reuses finished runs and
evaluations (work directories are kept), so rows and seeds can be added later.
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
          "--lr", "5e-4", "--eval-every", "0", "--variants", "0", "--input-spacing", "0"]


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    train: tuple[str, ...] = ()
    evaluate: tuple[str, ...] = ()
    train_as: str | None = None  # evaluate the models of that row instead of training


# The localiser as it was before the generalisation levers (docs/training.md): conv head on the
# raw embedding, no augmentation, longest side to the frame.
_MAP = ["--recipe", "improved", "--head", "conv", "--no-normalise", "--variants", "0",
        "--input-spacing", "0"]

ROWS: dict[str, Row] = {
    "paper": Row("paper recipe (docs/method.md)", ("--recipe", "paper")),
    "class": Row("class prompt encoder + learned embedding, negatives, presence", tuple(_CLASS)),
    "class_frozen": Row("the same, mask decoder frozen", tuple(_CLASS) + ("--no-train-decoder",)),
    "probe": Row("linear probe map → box → frozen LiteMedSAM",
                 tuple(_MAP) + ("--localiser-width", "0")),
    "map": Row("conv localiser map → box → frozen LiteMedSAM (the previous default)",
               tuple(_MAP)),
    "map_augment": Row("the same + 3 augmented variants per slice (zoom, shift, intensity)",
                       tuple(_MAP) + ("--variants", "3")),
    "map_physical": Row("the same, every slice at 1.5 mm per pixel", tuple(_MAP[:-1]) + ("1.5",)),
    "generalise": Row("+ 1.5 mm per pixel, standardised embedding, multi-scale head, 8 variants "
                      "of scanner and patient augmentation (= `python train.py`)",
                      ("--recipe", "improved")),
    # What each lever buys: the default with one of its levers taken away (over seeds, as above).
    "generalise_no_physical": Row("the default without the physical scale (longest side to the "
                                  "frame)", ("--recipe", "improved", "--input-spacing", "0")),
    "generalise_no_head": Row("the default with the conv head on the raw embedding (no "
                              "standardisation, no multi-scale head)",
                              ("--recipe", "improved", "--head", "conv", "--no-normalise")),
    "generalise_no_augment": Row("the default without augmentation (no variants)",
                                 ("--recipe", "improved", "--variants", "0")),
    "generalise_3d": Row("the same + 3-D post-processing", evaluate=("--postprocess", "3d"),
                         train_as="generalise"),
    "refine": Row("the same + the diffusion class prompt encoder refining the map's box prompt "
                  "(frozen decoder)", ("--recipe", "improved", "--prompt", "refine",
                                       "--no-train-decoder")),
}


RENDERINGS = {"plain": "demo:shift=none", "shifted": "demo:shift=all"}
"""The two renderings of each held-out split (data/shifts.py)."""
EVALS = ("test/plain", "test/shifted", "validation/plain", "validation/shifted")
DEFAULT_ROWS = ("map", "generalise", "refine")
"""What ``--rows`` runs when left out: the rows of the README's demo table."""


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
                        "--workdir", str(workdir), "--data-dir", data_dir, "--no-progress"],
                       check=True)
        timing.write_text(json.dumps(time.perf_counter() - t0))
    metrics = {}
    for split in ("validation", "test"):
        for rendering, dataset in RENDERINGS.items():
            key = f"{split}/{rendering}"
            eval_dir = workdir / f"eval_{name}_{split}_{rendering}"
            if not (eval_dir / "metrics.json").exists():
                subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--checkpoint",
                                str(workdir), "--split", split, "--dataset", dataset,
                                "--data-dir", data_dir, "--out", str(eval_dir), *row.evaluate],
                               check=True, stdout=subprocess.DEVNULL)
            metrics[key] = json.loads((eval_dir / "metrics.json").read_text())
    return {"metrics": metrics, "steps": json.loads(summary.read_text())["steps"],
            "wall": json.loads(timing.read_text()) if timing.exists() else math.nan}


def row_figures(seeds: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Per-seed results of one row (``metrics`` keyed ``split/rendering``) → ``{column: (mean,
    std)}`` over the seeds: ``mean/<eval>``, ``presence/<eval>`` (accuracy), ``dsc/<eval>/<class>``
    for every evaluation, ``steps``, ``wall_min``."""
    cols: dict[str, list[float]] = {}
    for r in seeds:
        for key, m in r["metrics"].items():
            cols.setdefault(f"mean/{key}", []).append(
                next(iter(m["per_dataset"].values()))["dsc"])
            cols.setdefault(f"presence/{key}", []).append(m["presence"]["accuracy"])
            for cname, c in m["per_class"].items():
                cols.setdefault(f"dsc/{key}/{cname}", []).append(c["dsc"])
        cols.setdefault("steps", []).append(r["steps"])
        cols.setdefault("wall_min", []).append(r["wall"] / 60)
    return {k: mean_std(v) for k, v in cols.items()}


def _cell(fig, col: str) -> str:
    mean, std = fig.get(col, (math.nan, math.nan))
    digits = 0 if col == "steps" else 1 if col == "wall_min" else 3
    return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _markdown(head, rows) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def table(figures: dict[str, dict[str, tuple[float, float]]], class_names: Sequence[str],
          num_seeds: dict[str, int]) -> str:
    """Two Markdown tables, each cell ``mean ± std``: per row mean DSC and presence accuracy of
    the four evaluations, steps and wall; then per row and organ the plain and shifted test
    DSC."""
    def label(name):
        return ROWS[name].label if name in ROWS else name

    head = (["row", "seeds"] + [f"DSC {e.replace('/', ' ')}" for e in EVALS]
            + [f"presence {e.replace('/', ' ')}" for e in EVALS] + ["steps", "wall (min)"])
    cols = ([f"mean/{e}" for e in EVALS] + [f"presence/{e}" for e in EVALS]
            + ["steps", "wall_min"])
    summary = [[label(n), str(num_seeds[n])] + [_cell(f, c) for c in cols]
               for n, f in figures.items()]
    head2 = ["row"] + [f"{c} {r}" for c in class_names for r in ("plain", "shifted")]
    organs = [[label(n)] + [_cell(f, f"dsc/test/{r}/{c}") for c in class_names
                            for r in ("plain", "shifted")] for n, f in figures.items()]
    return "\n".join(_markdown(head, summary) + ["", "Test DSC per organ:", ""]
                     + _markdown(head2, organs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--data-dir", default="~/tensorflow_datasets")
    args = p.parse_args(argv)
    figures, class_names, num_seeds = {}, None, {}
    for name in args.rows:
        runs = [run_seed(ROWS[name], name, s, args.out, args.data_dir) for s in args.seeds]
        class_names = class_names or list(runs[0]["metrics"]["test/plain"]["per_class"])
        figures[name], num_seeds[name] = row_figures(runs), len(runs)
        (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    text = table(figures, class_names, num_seeds)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
