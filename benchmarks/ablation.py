"""The demo's ablation table (issue 13): the paper recipe and each extension, same seed, about
the same wall time on a 2-core CPU, scored on the demo's test split.

    python benchmarks/ablation.py                     # every row, ≈ 60 min on 2 CPU cores
    python benchmarks/ablation.py --rows paper negatives --out runs/ablation

Each row is a real ``python train.py ... --workdir OUT/<row>`` followed by
``python evaluate.py --checkpoint OUT/<row>`` (test split, the model's stored presence rule);
the table gives per-organ test DSC, the mean, presence precision/recall over (slice, class)
pairs (validation and test), and the wall time of the training command (embedding cache,
calibration and validation included). Rows are cumulative (the all-classes row and the augmentation
row were measured and not kept); the epochs of each row are set so that the whole command takes
about the time of the paper row (an all-classes step decodes 5 class prompts per slice:
measured 0.44 slices/s against 2.8 for one class; 3 augmented variants make a 4× larger
embedding cache, ≈ 1 min more).
Re-running resumes or reuses finished rows and their evaluations (work directories are kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS: dict[str, tuple[str, list[str]]] = {
    "paper": ("paper recipe (SPEC §1–3)", ["--recipe", "paper"]),
    "embedding": ("+ learned class embedding", ["--recipe", "paper", "--class-embedding",
                                                "learned"]),
    "all_classes": ("+ all classes per step", ["--recipe", "paper", "--class-embedding",
                                               "learned", "--classes-per-step", "all",
                                               "--epochs", "10"]),
    "negatives": ("+ negatives (1 in 4) and presence (= `python train.py`)",
                  ["--recipe", "improved"]),
    "augment": ("+ 3 augmented variants per slice (not kept)",
                ["--recipe", "improved", "--augment", "3", "--epochs", "34"]),
}


def run_row(name: str, args: list[str], out: Path, data_dir: str) -> dict:
    workdir = out / name
    summary = workdir / "summary.json"
    timing = workdir / "wall_seconds.json"
    if not summary.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--workdir", str(workdir),
                        "--data-dir", data_dir, "--no-progress"], check=True)
        timing.write_text(json.dumps(time.perf_counter() - t0))
    eval_dir = workdir / "eval_test"
    if not (eval_dir / "metrics.json").exists():
        subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--checkpoint", str(workdir),
                        "--out", str(eval_dir)], check=True, stdout=subprocess.DEVNULL)
    done = json.loads(summary.read_text())
    return {"test": json.loads((eval_dir / "metrics.json").read_text()),
            "validation": done.get("validation", {}), "steps": done["steps"],
            "wall": json.loads(timing.read_text()) if timing.exists() else float("nan")}


def table(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))["test"]
    names = [first["class_names"][str(c)] for c in range(1, len(first["class_names"]) + 1)]
    head = (["row"] + [f"{n} DSC" for n in names]
            + ["mean DSC (test)", "mean DSC (val)", "presence P / R (test)",
               "presence P / R (val)", "steps", "wall (min)"])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, r in results.items():
        t, v = r["test"], r["validation"]
        per = [t["per_class"][n]["dsc"] for n in names]
        mean = next(iter(t["per_dataset"].values()))["dsc"]
        pt, pv = t["presence"], v.get("presence", {})
        cells = ([ROWS[name][0]] + [f"{x:.3f}" if x is not None else "–" for x in per]
                 + [f"{mean:.3f}", f"{v.get('mean_dsc', float('nan')):.3f}",
                    f"{pt['precision']:.3f} / {pt['recall']:.3f}",
                    f"{pv.get('precision', float('nan')):.3f} / "
                    f"{pv.get('recall', float('nan')):.3f}",
                    str(r["steps"]), f"{r['wall'] / 60:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--data-dir", default="~/tensorflow_datasets")
    args = p.parse_args(argv)
    results = {name: run_row(name, ROWS[name][1], args.out, args.data_dir) for name in args.rows}
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
