"""The 3×3 convolutions of the class prompt encoder, alone, in JAX and PyTorch (float32).

    python benchmarks/conv_layers.py [--batch 2] [--repeats 5] [--widths 64,128,256]

Why: on a CPU the JAX training step from cached embeddings runs at about half PyTorch's speed
(``benchmarks/frameworks.py``), and almost all of its FLOPs are these convolutions at the 64×64
embedding resolution (SPEC §1.2). This times each distinct layer shape forward + backward (input
and weight gradients, as in training), batch ``--batch``, NHWC in JAX (``lax.conv_general_dilated``
under ``jax.jit``) and NCHW in PyTorch (``torch.nn.functional.conv2d``, eager; oneDNN on a CPU),
median of ``--repeats`` after warm-up, and prints GFLOP/s per layer and for the whole set (each
shape weighted by how often the encoder uses it: both branches' decoders are counted).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def layer_shapes(w1: int, w2: int, w3: int, dim: int = 256) -> list[tuple[int, int, int]]:
    """``(c_in, c_out, count)`` of every 3×3 conv of the class prompt encoder (SPEC §1.2)."""
    return [(dim + 1, w1, 1), (w1, w1, 1),            # enc1
            (w1, w2, 1), (w2, w2, 1),                 # enc2
            (w2, w3, 1), (w3, w2, 1),                 # middle
            (2 * w2, w2, 2), (w2, w1, 2),             # dec1 of the dense and the sparse branch
            (2 * w1, w1, 2), (w1, dim, 2)]            # dec2 of both branches


def _median_time(fn, repeats: int) -> float:
    fn(), fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_jax(c_in: int, c_out: int, batch: int, size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, c_in), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out), np.float32) * 0.05)

    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        return jnp.sum(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return _median_time(lambda: jax.block_until_ready(step(x, w)), repeats)


def time_torch(c_in: int, c_out: int, batch: int, size: int, repeats: int) -> float:
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, size, size, generator=gen, requires_grad=True)
    w = (torch.randn(c_out, c_in, 3, 3, generator=gen) * 0.05).requires_grad_()

    def run():
        x.grad = w.grad = None
        y = torch.nn.functional.conv2d(x, w, padding=1)
        (y * y).sum().backward()

    return _median_time(run, repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--widths", default="64,128,256", help="class prompt encoder widths")
    args = p.parse_args(argv)
    import torch
    print(f"# 3×3 convs, forward + backward, batch {args.batch}, {args.size}², float32; "
          f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    print("| c_in → c_out | × | GFLOP (fwd+bwd) | JAX ms | PyTorch ms | JAX GFLOP/s | "
          "PyTorch GFLOP/s | JAX / PyTorch speed |")
    print("|---|---|---|---|---|---|---|---|")
    total = {"flop": 0.0, "jax": 0.0, "torch": 0.0}
    for c_in, c_out, count in layer_shapes(*map(int, args.widths.split(","))):
        # forward 2·B·H·W·9·Cin·Cout; backward twice that (input and weight gradients)
        flop = 3 * 2 * args.batch * args.size ** 2 * 9 * c_in * c_out
        tj = time_jax(c_in, c_out, args.batch, args.size, args.repeats)
        tt = time_torch(c_in, c_out, args.batch, args.size, args.repeats)
        total["flop"] += count * flop
        total["jax"] += count * tj
        total["torch"] += count * tt
        print(f"| {c_in} → {c_out} | {count} | {flop / 1e9:.2f} | {tj * 1e3:.0f} | {tt * 1e3:.0f} "
              f"| {flop / tj / 1e9:.0f} | {flop / tt / 1e9:.0f} | {tt / tj:.2f}× |", flush=True)
    print(f"| **all** | | {total['flop'] / 1e9:.1f} | {total['jax'] * 1e3:.0f} | "
          f"{total['torch'] * 1e3:.0f} | {total['flop'] / total['jax'] / 1e9:.0f} | "
          f"{total['flop'] / total['torch'] / 1e9:.0f} | {total['torch'] / total['jax']:.2f}× |")


if __name__ == "__main__":
    main()
