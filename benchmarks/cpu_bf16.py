"""What XLA:CPU does with bf16: the class prompt encoder's main conv and a matmul of its size,
in float32, bf16 and bf16 inputs with a float32 result, in JAX and PyTorch.

    python benchmarks/cpu_bf16.py [--repeats 7]

For each case the compiled HLO is read: the result type of the convolution/dot after XLA's
passes and how many ``convert`` instructions it added (2 on the inputs + 1 on the result: the op
was moved to float32; 0: it runs on the bf16 inputs); then the op alone is timed
(jitted, median of ``--repeats`` after warm-up) and GFLOP/s printed. PyTorch runs the same
shapes eagerly (oneDNN; bf16 tensors). Why: ``benchmarks/frameworks.py``'s JAX bf16 rows are no
faster than float32 on a CPU, while PyTorch's nearly double.
"""

from __future__ import annotations

import argparse
import re

import jax
import jax.numpy as jnp
import numpy as np
from conv_layers import median_time as median_s  # benchmarks/ is the script's directory

CONV = ((2, 64, 64, 256), (3, 3, 256, 128))   # NHWC input, HWIO kernel: dec1's first conv
DOT = ((8192, 2304), (2304, 128))             # the same FLOPs as one matmul


def jax_case(kind: str, dtype, out_dtype, repeats: int) -> dict:
    a_shape, b_shape = CONV if kind == "conv" else DOT
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal(a_shape, np.float32), dtype)
    b = jnp.asarray(rng.standard_normal(b_shape, np.float32) * 0.05, dtype)
    if kind == "conv":
        def f(a, b):
            return jax.lax.conv_general_dilated(a, b, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                preferred_element_type=out_dtype)
    else:
        def f(a, b):
            return jax.lax.dot(a, b, preferred_element_type=out_dtype)
    compiled = jax.jit(f).lower(a, b).compile()
    hlo = compiled.as_text()
    op = "convolution" if kind == "conv" else "dot"
    runs_in = sorted(set(re.findall(rf"= (\w+)\[[\d,]*\]\S* {op}\(", hlo)))
    converts = len(re.findall(r" convert\(", hlo))
    ms = 1e3 * median_s(lambda: compiled(a, b).block_until_ready(), repeats)
    return {"runs_in": ",".join(runs_in), "converts": converts, "ms": ms}


def torch_ms(kind: str, bf16: bool, repeats: int) -> float:
    import torch
    dt = torch.bfloat16 if bf16 else torch.float32
    a_shape, b_shape = CONV if kind == "conv" else DOT
    g = torch.Generator().manual_seed(0)
    if kind == "conv":
        x = torch.randn(a_shape[0], a_shape[3], *a_shape[1:3], generator=g).to(dt)
        w = (torch.randn(b_shape[3], b_shape[2], *b_shape[:2], generator=g) * 0.05).to(dt)
        return 1e3 * median_s(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats)
    a, b = torch.randn(*a_shape, generator=g).to(dt), torch.randn(*b_shape, generator=g).to(dt)
    return 1e3 * median_s(lambda: a @ b, repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    import torch
    jax.config.update("jax_default_matmul_precision", "highest")
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)\n")
    print("| op | inputs → result | compiled op's result | converts XLA added | JAX ms | JAX GFLOP/s | "
          "PyTorch ms | PyTorch GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("conv", "dot"):
        a_shape, b_shape = CONV if kind == "conv" else DOT
        flop = (2 * np.prod(a_shape[:3]) * np.prod(b_shape) if kind == "conv"
                else 2 * a_shape[0] * a_shape[1] * b_shape[1])
        name = (f"3×3 conv {a_shape[3]}→{b_shape[3]}, {a_shape[1]}², batch {a_shape[0]}"
                if kind == "conv" else f"matmul {a_shape[0]}×{a_shape[1]}×{b_shape[1]}")
        for label, dt, out, tbf in (("f32 → f32", jnp.float32, None, False),
                                    ("bf16 → bf16", jnp.bfloat16, None, True),
                                    ("bf16 → f32", jnp.bfloat16, jnp.float32, None)):
            r = jax_case(kind, dt, out, args.repeats)
            t = None if tbf is None else torch_ms(kind, tbf, args.repeats)
            print(f"| {name} | {label} | {r['runs_in']} | {r['converts']} | {r['ms']:.1f} | "
                  f"{flop / r['ms'] / 1e6:.0f} | " + ("—" if t is None else f"{t:.1f}") + " | "
                  + ("—" if t is None else f"{flop / t / 1e6:.0f}") + " |", flush=True)


if __name__ == "__main__":
    main()
