"""The 3×3 convolutions of the class prompt encoder, alone, in JAX and PyTorch (float32): forward,
input gradient and weight gradient timed apart.

    python benchmarks/conv_layers.py [--batch 2] [--repeats 5] [--widths 64,128,256]

Why: on a CPU the JAX training step from cached embeddings is slower than PyTorch's
(``benchmarks/frameworks.py``), and most of its FLOPs are these convolutions at the 64×64 embedding
resolution (docs/method.md#class-prompt-encoder; ``benchmarks/profile_breakdown.py`` shows them on
top). Each distinct layer shape, batch ``--batch``: JAX (NHWC, ``lax.conv_general_dilated`` and its
two ``jax.vjp`` transposes, each jitted alone) and PyTorch (NCHW, eager, oneDNN on a CPU:
``aten.convolution`` and ``aten.convolution_backward`` with only the input or only the weight
gradient requested), median of ``--repeats`` after warm-up. Prints GFLOP/s per op and layer and for
the whole set (each shape weighted by how often the encoder uses it: both branches' decoders are
counted).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def layer_shapes(w1: int, w2: int, w3: int, dim: int = 256) -> list[tuple[int, int, int]]:
    """``(c_in, c_out, count)`` of every 3×3 conv of the class prompt encoder
    (docs/method.md#class-prompt-encoder)."""
    return [(dim + 1, w1, 1), (w1, w1, 1),            # enc1
            (w1, w2, 1), (w2, w2, 1),                 # enc2
            (w2, w3, 1), (w3, w2, 1),                 # middle
            (2 * w2, w2, 2), (w2, w1, 2),             # dec1 of the dense and the sparse branch
            (2 * w1, w1, 2), (w1, dim, 2)]            # dec2 of both branches


def median_time(fn, repeats: int) -> float:
    fn(), fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


OPS = ("forward", "input grad", "weight grad")


def time_jax(c_in: int, c_out: int, batch: int, size: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, size, size, c_in), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out), np.float32) * 0.05)
    dy = jnp.asarray(rng.standard_normal((batch, size, size, c_out), np.float32))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=jax.lax.Precision.HIGHEST)

    fns = {"forward": (jax.jit(conv), (x, w)),
           "input grad": (jax.jit(lambda w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0]),
                          (w, dy)),
           "weight grad": (jax.jit(lambda x, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]),
                           (x, dy))}
    return {op: median_time(lambda: jax.block_until_ready(f(*a)), repeats)
            for op, (f, a) in fns.items()}


def time_torch(c_in: int, c_out: int, batch: int, size: int, repeats: int) -> dict[str, float]:
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, size, size, generator=gen)
    w = torch.randn(c_out, c_in, 3, 3, generator=gen) * 0.05
    dy = torch.randn(batch, c_out, size, size, generator=gen)
    conv = torch.ops.aten.convolution
    grad = torch.ops.aten.convolution_backward

    def backward(mask):
        return lambda: grad(dy, x, w, [c_out], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    with torch.no_grad():
        return {"forward": median_time(lambda: conv(x, w, None, [1, 1], [1, 1], [1, 1], False,
                                                      [0, 0], 1), repeats),
                "input grad": median_time(backward([True, False, False]), repeats),
                "weight grad": median_time(backward([False, True, False]), repeats)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--widths", default="64,128,256", help="class prompt encoder widths")
    args = p.parse_args(argv)
    import torch
    print(f"# 3×3 convs: forward, input gradient, weight gradient; batch {args.batch}, {args.size}², float32; "
          f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    print("| c_in → c_out | × | GFLOP per op | " + " | ".join(
        f"{op}: JAX / PyTorch GFLOP/s" for op in OPS) + " | JAX / PyTorch speed, all three |")
    print("|---|---|---|" + "---|" * len(OPS) + "---|")
    flop_all, tj_all, tt_all = 0.0, dict.fromkeys(OPS, 0.0), dict.fromkeys(OPS, 0.0)
    for c_in, c_out, count in layer_shapes(*map(int, args.widths.split(","))):
        flop = 2 * args.batch * args.size ** 2 * 9 * c_in * c_out  # each of the three ops
        tj = time_jax(c_in, c_out, args.batch, args.size, args.repeats)
        tt = time_torch(c_in, c_out, args.batch, args.size, args.repeats)
        flop_all += count * flop
        for op in OPS:
            tj_all[op] += count * tj[op]
            tt_all[op] += count * tt[op]
        print(f"| {c_in} → {c_out} | {count} | {flop / 1e9:.2f} | " + " | ".join(
            f"{flop / tj[op] / 1e9:.0f} / {flop / tt[op] / 1e9:.0f}" for op in OPS)
            + f" | {sum(tt.values()) / sum(tj.values()):.2f}× |", flush=True)
    print(f"| **all** | | {flop_all / 1e9:.1f} | " + " | ".join(
        f"{flop_all / tj_all[op] / 1e9:.0f} / {flop_all / tt_all[op] / 1e9:.0f}" for op in OPS)
        + f" | {sum(tt_all.values()) / sum(tj_all.values()):.2f}× |")


if __name__ == "__main__":
    main()
