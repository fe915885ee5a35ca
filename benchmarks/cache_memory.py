"""Peak memory of ``train.py --cache-embeddings`` against the number of training slices.

    python benchmarks/cache_memory.py                                  # 100 … 5,000 slices
    python benchmarks/cache_memory.py --slices 100 500 --repo ../old   # another checkout's train.py

Each row is a real ``train.py`` run (a subprocess; its peak RSS from ``wait4``) on a synthetic 2D
dataset of 256×256 slices with the ``tiny_litemedsam`` backbone: the LiteMedSAM frame and
embedding shape (64×64×256, 4 MiB per float32 embedding) with a tiny encoder, so the cache holds
what a LiteMedSAM run's would while the rows take minutes, not hours. Flips off (one embedding per
slice), 4 training steps, then the run's validation. Every size is also run without the cache,
the baseline of the target (cache ≤ 2 GiB above it). ``--repo`` runs another checkout's
``train.py`` (e.g. the code before the on-disk cache; options it lacks are left out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(repo: Path, slices: int, cached: bool, out: Path) -> dict:
    """One train.py run: peak RSS (MiB), wall time, training slices, embedding seconds."""
    cases = -(-slices * 10 // 8)  # the train split holds 80 % of the cases, one slice each
    data, work = out / "data", out / f"run_{slices}_{'cache' if cached else 'online'}"
    cmd = [sys.executable, str(repo / "train.py"), "--recipe", "paper", "--dataset",
           f"synthetic:num_cases={cases},num_classes=3,height=256,width=256",
           "--backbone", "tiny_litemedsam", "--weights", "random", "--class-prompt-widths",
           "8", "16", "32", "--batch-size", "2", "--epochs", "1", "--max-steps", "4", "--no-flips",
           "--data-dir", str(data), "--workdir", str(work), "--no-progress"]
    if cached:
        cmd += ["--cache-embeddings"]
        if (repo / "automedsam_jax" / "data" / "embedding_cache.py").exists():
            cmd += ["--cache-dir", str(out / "embeddings")]
    else:
        cmd += ["--no-cache-embeddings"]
    env = dict(os.environ, PYTHONPATH=str(repo), JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    work.mkdir(parents=True, exist_ok=True)
    if os.waitstatus_to_exitcode(status) != 0:
        return {"slices": slices, "cached": cached, "error": log[-2000:]}
    found = re.search(r"(\d+) training slices", log)
    (work / "train.log").write_text(log)
    embedded = re.search(r"embedding cache: .*, ([\d.]+) s\b", log)
    return {"slices": int(found.group(1)) if found else slices, "cached": cached,
            "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": wall,
            "embedding_s": float(embedded.group(1)) if embedded else None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slices", type=int, nargs="+", default=[100, 500, 1000, 2000, 5000])
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose train.py runs")
    p.add_argument("--out", type=Path, default=Path("runs/cache_memory"))
    p.add_argument("--no-baseline", action="store_true", help="skip the runs without the cache")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| training slices | peak RSS, no cache (MiB) | peak RSS, cache (MiB) | cache − none "
          "(MiB) | embedding (s) |")
    print("|---|---|---|---|---|")
    for n in args.slices:
        base = None if args.no_baseline else run(args.repo.absolute(), n, False, args.out)
        cached = run(args.repo.absolute(), n, True, args.out)
        rows += [r for r in (base, cached) if r]
        if "error" in cached or (base and "error" in base):
            print(f"| {n} | failed: {(cached.get('error') or base.get('error'))[-300:]!r} |")
            continue
        b = base["peak_rss_mib"] if base else float("nan")
        print(f"| {cached['slices']} | {b:.0f} | {cached['peak_rss_mib']:.0f} | "
              f"{cached['peak_rss_mib'] - b:+.0f} | {cached['embedding_s'] or 0:.1f} |",
              flush=True)
    (args.out / f"memory_{args.repo.absolute().name}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
