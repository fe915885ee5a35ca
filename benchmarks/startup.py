"""What the persistent compilation cache saves: the same ``train.py`` command started three times,
seconds from the start of the process to the end of its first epoch (start-up, data, compilation
and that epoch's steps).

    python benchmarks/startup.py --out runs/startup -- --epochs 1      # the demo, one epoch

1. ``--compilation-cache none``: warms everything else that a second start reuses (the dataset,
   the embedding cache), so the two runs below differ only in compilation;
2. a fresh ``--compilation-cache OUT/xla``: compiles and writes the cache (the first start);
3. the same command again: reads it (the second start).
Each run has its own work directory. Prints the three times and 3's saving over 2; writes
``OUT/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from automedsam_jax.core.cpu import cpu_info

ROOT = Path(__file__).resolve().parents[1]
FIRST_EPOCH = "epoch 1/"


def time_to_first_epoch(args: list[str]) -> float:
    """Seconds from starting ``python train.py ARGS`` to its first end-of-epoch line (the run is
    then left to finish)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in proc.stdout:
        if seen is None and FIRST_EPOCH in line:
            seen = time.perf_counter() - start
    if proc.wait() != 0 or seen is None:
        raise SystemExit(f"train.py {' '.join(args)} failed (exit {proc.returncode}) or printed "
                         f"no {FIRST_EPOCH!r} line")
    return seen


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/startup"))
    p.add_argument("train_args", nargs="*", help="train.py's options (after --)")
    a = p.parse_args(argv)
    shutil.rmtree(a.out, ignore_errors=True)
    cache = a.out / "xla"
    runs = {"warm-up (cache off)": "none", "first start (cache empty)": str(cache),
            "second start (cache full)": str(cache)}
    seconds = {}
    for i, (name, where) in enumerate(runs.items()):
        seconds[name] = time_to_first_epoch(
            [*a.train_args, "--workdir", str(a.out / f"run{i}"), "--compilation-cache", where])
        print(f"{name:28s} {seconds[name]:7.1f} s to the end of the first epoch", flush=True)
    first, second = seconds["first start (cache empty)"], seconds["second start (cache full)"]
    entries = sum(1 for _ in cache.iterdir()) if cache.is_dir() else 0
    print(f"the second start saves {first - second:.1f} s ({second / first:.2f}× the first); "
          f"{entries} cached programs")
    (a.out / "startup.json").write_text(json.dumps(
        {"seconds": seconds, "cached_programs": entries, "train_args": a.train_args,
         "cpu": cpu_info()}, indent=2))


if __name__ == "__main__":
    main()
