"""Image-encoder forward: jitted JAX vs PyTorch eager, same machine, same weights, same input.

    python benchmarks/encoder_speed.py [--presets medsam_vit_b litemedsam] [--batch 1] [--repeats 5]

Weights are random (the speed does not depend on them) and converted from the PyTorch model, so
both sides run the same network; the outputs are compared before timing. JAX is timed after one
warm-up call (compilation reported separately) with ``block_until_ready``; PyTorch under
``torch.inference_mode()`` after one warm-up call. Prints a Markdown table of medians with the
JAX/PyTorch speed ratio (> 1: JAX faster). Needs the ``[torch]`` extra.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np
import torch

from automedsam_jax.core.config import SamConfig
from automedsam_jax.io.conversion import sam_from_torch
from automedsam_references.torch_reference import nchw, nhwc, randomized_torch_sam, rel_err


def _median_s(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), (max(times) - min(times)) / 2


def bench(name: str, batch: int, repeats: int) -> dict:
    cfg = SamConfig.preset(name)
    tm = randomized_torch_sam(cfg)
    jm = sam_from_torch({k: v.numpy() for k, v in tm.state_dict().items()}, cfg)
    x = np.random.RandomState(0).rand(batch, cfg.image_size, cfg.image_size, 3).astype(np.float32)
    xj, xt = jax.device_put(x), nchw(x)

    encode = jax.jit(lambda m, x: m.image_encoder(x))
    t = time.perf_counter()
    out = encode(jm, xj).block_until_ready()
    compile_s = time.perf_counter() - t
    with torch.inference_mode():
        ref = tm.image_encoder(xt)
        err = rel_err(out, nhwc(ref))
        t_torch, s_torch = _median_s(lambda: tm.image_encoder(xt), repeats)
    t_jax, s_jax = _median_s(lambda: encode(jm, xj).block_until_ready(), repeats)
    return dict(preset=name, size=cfg.image_size, batch=batch, jax_s=t_jax, jax_spread=s_jax,
                torch_s=t_torch, torch_spread=s_torch, compile_s=compile_s, rel_err=err)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["medsam_vit_b", "litemedsam"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.set_float32_matmul_precision("highest")
    print(f"# image encoder forward, float32, batch {args.batch}, median of {args.repeats}")
    print(f"# {platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
    print("| preset | input | JAX jit (s) | PyTorch eager (s) | JAX speed-up | JAX compile (s) | rel. err |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        r = bench(name, args.batch, args.repeats)
        print(f"| {r['preset']} | {r['size']}² | {r['jax_s']:.3f} ± {r['jax_spread']:.3f} | "
              f"{r['torch_s']:.3f} ± {r['torch_spread']:.3f} | {r['torch_s'] / r['jax_s']:.2f}× | "
              f"{r['compile_s']:.1f} | {r['rel_err']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
