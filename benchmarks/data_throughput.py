"""Training input pipeline throughput (samples/s) at the 1024 (MedSAM) and 256 (LiteMedSAM) frames.

Builds (once) a synthetic dataset of 512×512 CT-like slices — the size of most CT/MR slices in the
challenge data — or reads a built preset, then times ``train_dataset`` batches after a warm-up.

    python benchmarks/data_throughput.py                       # synthetic 512², both frames
    python benchmarks/data_throughput.py --workers 2 --threads 0
    python benchmarks/data_throughput.py --dataset demo
"""

from __future__ import annotations

import argparse
import tempfile
import time

import grain

from automedsam_jax.core.config import LITEMEDSAM_FRAME, MEDSAM_FRAME
from automedsam_jax.data import PipelineConfig, SyntheticConfig, prepare, train_dataset

FRAMES = {"1024 (medsam_vit_b)": MEDSAM_FRAME, "256 (litemedsam)": LITEMEDSAM_FRAME}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", help="'synthetic' or a preset name")
    parser.add_argument("--data-dir", default=None, help="tfds data dir (default: a temp dir)")
    parser.add_argument("--manual-dir", default=None, help="challenge npz files for presets")
    parser.add_argument("--size", type=int, default=512, help="synthetic slice side (px)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per frame")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=PipelineConfig.num_threads)
    args = parser.parse_args()

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="automedsam_bench_")
    dataset = (SyntheticConfig(num_cases=4, num_classes=5, height=args.size, width=args.size,
                               depth=16) if args.dataset == "synthetic" else args.dataset)
    builder = prepare(dataset, data_dir, manual_dir=args.manual_dir)
    source = builder.as_data_source("train")
    print(f"dataset {builder.info.config_name}: {len(source)} train slices; batch "
          f"{args.batch_size}, workers {args.workers}, threads {args.threads}")
    for name, frame in FRAMES.items():
        cfg = PipelineConfig(num_workers=args.workers, num_threads=args.threads)
        it = iter(train_dataset(source, frame, 256, cfg, batch_size=args.batch_size,
                                shard=grain.sharding.NoSharding()))
        next(it)  # warm-up: opens files, starts workers
        start = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        elapsed = time.perf_counter() - start
        print(f"frame {name}: {args.batches * args.batch_size / elapsed:.1f} samples/s "
              f"({elapsed / args.batches * 1000:.0f} ms/batch)")


if __name__ == "__main__":
    main()
