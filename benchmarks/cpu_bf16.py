"""What XLA:CPU does with bf16, op class by op class, at LiteMedSAM's layer shapes: forward,
input gradient and weight gradient of its matmuls and convolutions in float32, in bf16 (the
native bf16 mode: bf16 in and out) and with bf16 operands accumulated in float32 (the CPU form
of the model's bf16 mode, ``automedsam_jax.core.backend.bf16_dot``; for a convolution,
``preferred_element_type=float32``).

    python benchmarks/cpu_bf16.py [--repeats 7]

Each pass is jitted alone (the gradients by ``jax.vjp``) and its compiled HLO read: the dtype
of the operands the dot/convolution runs on after XLA's passes, and how many ``convert``
instructions the module holds (inputs and result moved to and from float32 show there); then it
is timed: after two warm-up calls, ``--repeats`` rounds each time one call of every variant of
the pass in turn, and the speed relative to float32 is the median (min–max) of the per-round
ratios. Why: the model's bf16 mode is faster than float32 on a CPU only where XLA:CPU runs the
op on bf16 operands (``core/backend.py``, ``bf16_compute``).
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from automedsam_jax.core import backend

# (name, kind, x shape, w shape): "dot" is x (M, K) · w (K, N); "conv" a 3×3 NHWC/HWIO one.
CASES = (
    ("matmul: mask decoder k/v projection, 2×4096 tokens, 256→128", "dot",
     (8192, 256), (256, 128)),
    ("matmul: TinyViT stage-2 MLP fc1, 1024 tokens, 128→512", "dot", (1024, 128), (128, 512)),
    ("1×1 conv as matmul: TinyViT MBConv 64→256, 64² (one image)", "dot",
     (4096, 64), (64, 256)),
    ("3×3 conv: class prompt encoder 256→128, 64², batch 2", "conv",
     (2, 64, 64, 256), (3, 3, 256, 128)),
)
VARIANTS = ("f32", "bf16", "bf16 operands, f32 accumulation")
PASSES = ("forward", "input grad", "weight grad")
F32, BF16 = jnp.float32, jnp.bfloat16


def op(kind: str, variant: str):
    """The op ``(x, w) -> y`` of ``variant``."""
    if kind == "dot":
        if variant == VARIANTS[2]:
            return lambda x, w: backend.bf16_dot("mk,kn->mn", x, w)
        return lambda x, w: x @ w
    pet = F32 if variant == VARIANTS[2] else None
    return lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=pet)


def runs_on(hlo: str, kind: str) -> str:
    """The operand dtypes of the compiled module's dots or convolutions."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    name = "dot" if kind == "dot" else "convolution"
    found = {"×".join(types.get(a, "?") for a in m)
             for m in re.findall(rf" {name}\(%([\w.\-]+), %([\w.\-]+)\)", hlo)}
    return ", ".join(sorted(found)) or "?"


def case(kind: str, x_shape, w_shape, variant: str) -> dict:
    """Each pass of ``variant``: its compiled HLO's ``runs_on`` and ``converts``, and ``call``
    (one synchronised call, warmed up twice); ``s`` collects its timed rounds."""
    rng = np.random.default_rng(0)
    # bf16_dot takes float32 operands and rounds them itself; the plain bf16 ops take bf16.
    dt = BF16 if variant == VARIANTS[1] or (kind == "conv" and variant == VARIANTS[2]) else F32
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32), dt)
    w = jnp.asarray(rng.standard_normal(w_shape, np.float32) * 0.05, dt)
    f = op(kind, variant)
    y = jax.eval_shape(f, x, w)
    dy = jnp.asarray(rng.standard_normal(y.shape, np.float32), y.dtype)
    fns = {"forward": (f, (x, w)),
           "input grad": (lambda w, dy: jax.vjp(lambda x: f(x, w), x)[1](dy)[0], (w, dy)),
           "weight grad": (lambda x, dy: jax.vjp(lambda w: f(x, w), w)[1](dy)[0], (x, dy))}
    out = {}
    for name, (g, args) in fns.items():
        compiled = jax.jit(g).lower(*args).compile()
        hlo = compiled.as_text()
        call = functools.partial(lambda c, a: jax.block_until_ready(c(*a)), compiled, args)
        call(), call()
        out[name] = {"runs_on": runs_on(hlo, kind), "converts": hlo.count(" convert("),
                     "call": call, "s": []}
    return out


def time_rounds(results: dict, repeats: int) -> None:
    """``repeats`` rounds, each timing one call of every (pass, variant) in turn, so the drift of
    a shared machine falls on every variant alike."""
    for _ in range(repeats):
        for ps in PASSES:
            for v in VARIANTS:
                r = results[v][ps]
                t = time.perf_counter()
                r["call"]()
                r["s"].append(time.perf_counter() - t)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}; {args.repeats} "
          "interleaved rounds\n")
    print("| op | variant | pass | runs on | converts | ms (median) | GFLOP/s | speed vs f32 "
          "(median of rounds) | min–max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, kind, x_shape, w_shape in CASES:
        flop = 2.0 * np.prod(x_shape) * w_shape[-1] * (9 if kind == "conv" else 1)
        results = {v: case(kind, x_shape, w_shape, v) for v in VARIANTS}
        time_rounds(results, args.repeats)
        for v in VARIANTS:
            for ps in PASSES:
                r, ref = results[v][ps], results["f32"][ps]
                t = statistics.median(r["s"])
                per = [a / b for a, b in zip(ref["s"], r["s"])]
                print(f"| {name} | {v} | {ps} | {r['runs_on']} | {r['converts']} | "
                      f"{1e3 * t:.2f} | {flop / t / 1e9:.0f} | {statistics.median(per):.2f}× | "
                      f"{min(per):.2f}–{max(per):.2f} |", flush=True)


if __name__ == "__main__":
    main()
