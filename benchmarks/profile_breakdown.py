"""Where the time goes: JAX and PyTorch, op class by op class, in each mode of ``frameworks.py``.

    python benchmarks/profile_breakdown.py --backbone litemedsam --weights pretrained --batch 2
    python benchmarks/profile_breakdown.py --modes cached --calls 3 --top 15

Same model, weights, inputs and noise as ``benchmarks/frameworks.py`` (its ``JaxSide`` and
``TorchSide``), float32 at highest matmul precision, CPU backend. After warm-up, ``--calls``
calls of each mode are profiled:

* JAX: ``jax.profiler`` trace (XLA:CPU emits one event per executed instruction of the compiled
  module with ``--xla_cpu_enable_xprof_traceme``, which this script sets). Each event is looked
  up in the compiled HLO and classed from its op, the ops of its fused computation and its
  ``op_name`` (``jvp`` = forward, ``transpose(jvp)`` = backward; the named scopes
  ``attention`` and ``optimizer`` of ``core.modeling.common.attention`` and the train step).
* PyTorch (eager): ``torch.profiler``; each op's self CPU time, classed by its ``aten`` name;
  ops below ``Optimizer.step`` are the optimizer update; ``bmm`` and softmax are attention.

Classes: conv forward, conv backward-input, conv backward-filter (PyTorch computes both
gradients in one ``convolution_backward`` op: its row is "conv backward (both)"), matmul
(linear layers; on a CPU the 2×2 transposed convolutions too), attention, layout (transposes,
copies, concatenation, padding, slicing), element-wise and reductions (norms, activations,
loss), optimizer update, and "outside ops" = wall time − the ops' sum (dispatch, Python,
host↔device, waits; negative when XLA runs independent ops at once). ``--top`` lists the
slowest JAX instructions with their shapes. Prints Markdown; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig,  # noqa: E402
                                        ClassPromptConfig, SamConfig)
from automedsam_jax.core.init import random_model  # noqa: E402
import frameworks  # noqa: E402

CLASSES = ("conv forward", "conv backward-input", "conv backward-filter", "conv backward (both)",
           "matmul", "attention", "layout", "element-wise & reductions", "optimizer update",
           "outside ops")
LAYOUT_OPS = {"copy", "transpose", "bitcast", "reshape", "concatenate", "pad", "slice",
              "dynamic-slice", "dynamic-update-slice", "reverse", "broadcast", "parameter",
              "tuple", "get-tuple-element", "constant", "iota", "gather"}


# -- JAX: the compiled HLO -------------------------------------------------------------------
def _opcode(line: str) -> tuple[str, str] | None:
    """(name, opcode) of an HLO instruction line."""
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if not m:
        return None
    rest = line[m.end():]
    if rest.startswith("("):  # a tuple shape: skip to its closing parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                rest = rest[i + 1:]
                break
    else:
        rest = rest.split(" ", 1)[1] if " " in rest else ""
    op = re.match(r"\s*([\w\-]+)\(", rest)
    return (m.group(1), op.group(1)) if op else None


class Hlo:
    """Instructions of a compiled module by name, with their computation's body."""

    def __init__(self, text: str):
        self.lines: dict[str, str] = {}
        self.bodies: dict[str, list[str]] = {}
        comp = None
        for line in text.splitlines():
            head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
            if head and line.rstrip().endswith("{"):
                comp = head.group(1)
                self.bodies[comp] = []
                continue
            if comp is not None and line.startswith("  "):
                self.bodies[comp].append(line)
                parsed = _opcode(line)
                if parsed:
                    self.lines[parsed[0]] = line

    def classify(self, name: str) -> str:
        line = self.lines.get(name)
        if line is None:
            return "element-wise & reductions"
        op_name = (re.search(r'op_name="([^"]*)"', line) or [None, ""])[1]
        if "optimizer" in op_name:
            return "optimizer update"
        if "attention" in op_name:
            return "attention"
        _, opcode = _opcode(line)
        called = re.search(r"calls=%([\w.\-]+)", line)
        body = self.bodies.get(called.group(1), []) if called else []
        ops = {o for o in (_opcode(b) for b in body) if o} if body else set()
        opcodes = {o for _, o in ops} | {opcode}
        if "convolution" in opcodes:
            conv = next((b for b in body if " convolution(" in b), line)
            if "transpose(" not in op_name:
                return "conv forward"
            # The weight gradient slides the activation over the output gradient: its window is
            # larger than its (kernel-sized) output; the input gradient's is the kernel.
            size = re.search(r"window=\{size=(\d+)x(\d+)", conv)
            shape = re.search(r"= \w+\[([\d,]+)\]", conv)
            labels = re.search(r"dim_labels=\w+_\w+->(\w+)", conv)
            if size and shape and labels:
                dims = [int(d) for d in shape.group(1).split(",")]
                out = dims[labels.group(1).index("0")] * dims[labels.group(1).index("1")]
                if int(size.group(1)) * int(size.group(2)) > out:
                    return "conv backward-filter"
            return "conv backward-input"
        if "dot" in opcodes:
            return "matmul"
        if opcodes - {"fusion"} <= LAYOUT_OPS:
            return "layout"
        return "element-wise & reductions"

    def is_container(self, name: str) -> bool:
        """A loop, call or conditional: its body's instructions have events of their own."""
        return _opcode(self.lines[name])[1] in ("while", "call", "conditional")

    def shape(self, name: str) -> str:
        line = self.lines.get(name, "")
        m = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = (\S+)", line)
        return m.group(1) if m else "?"


def profile_jax(side: frameworks.JaxSide, mode: str, calls: int, top: int) -> dict:
    compiled, _, call, sync, _ = side.prepare(mode, "fp32")
    hlo = Hlo(compiled.as_text())
    for _ in range(2):
        call()
    sync()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            t = time.perf_counter()
            for _ in range(calls):
                call()
            sync()
            wall = time.perf_counter() - t
        path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))["traceEvents"]
    by_class, by_op = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"] not in hlo.lines or hlo.is_container(e["name"]):
            continue
        by_class[hlo.classify(e["name"])] += e["dur"] / 1e3 / calls
        by_op[e["name"]] += e["dur"] / 1e3 / calls
    by_class["outside ops"] = wall * 1e3 / calls - sum(by_class.values())
    slowest = [(n, ms, hlo.classify(n), hlo.shape(n)) for n, ms in by_op.most_common(top)]
    return {"wall_ms": wall * 1e3 / calls, "classes": dict(by_class), "slowest": slowest}


# -- PyTorch ---------------------------------------------------------------------------------
def torch_class(name: str, ancestors: list[str]) -> str:
    if any(a.startswith("Optimizer.step") for a in ancestors):
        return "optimizer update"
    n = name.removeprefix("aten::")
    if "conv" in n:
        return "conv backward (both)" if "backward" in n else "conv forward"
    if n in ("bmm", "_softmax", "softmax", "_softmax_backward_data"):
        return "attention"
    if n in ("mm", "addmm", "matmul", "linear"):
        return "matmul"
    if n in ("copy_", "contiguous", "clone", "cat", "constant_pad_nd", "pad", "permute",
             "transpose", "view", "reshape", "expand", "slice", "select", "index", "stack",
             "_to_copy", "to", "flatten", "unsqueeze", "squeeze", "as_strided", "t", "narrow",
             "repeat", "flip"):
        return "layout"
    if name.startswith(("autograd::", "Optimizer.", "[memory]")) or n in (
            "empty", "empty_like", "zeros", "zeros_like", "ones_like", "empty_strided", "fill_",
            "zero_", "detach", "detach_", "resize_"):
        return "outside ops"
    return "element-wise & reductions"


def profile_torch(side: frameworks.TorchSide, mode: str, calls: int) -> dict:
    import torch
    _, call, _ = side.prepare(mode, "fp32")
    for _ in range(2):
        call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(calls):
            call()
        wall = time.perf_counter() - t
    by_class = collections.Counter()
    for e in prof.events():
        ancestors, p = [], e.cpu_parent
        while p is not None:
            ancestors.append(p.name)
            p = p.cpu_parent
        if e.name.startswith("ProfilerStep"):
            continue
        by_class[torch_class(e.name, ancestors)] += e.self_cpu_time_total / 1e3 / calls
    by_class["outside ops"] += wall * 1e3 / calls - sum(by_class.values())
    return {"wall_ms": wall * 1e3 / calls, "classes": dict(by_class)}


# -- report ----------------------------------------------------------------------------------
def report(mode: str, jx: dict, pt: dict | None) -> str:
    wall = f"JAX {jx['wall_ms']:.0f}" + (f", PyTorch eager {pt['wall_ms']:.0f}" if pt else "")
    lines = [f"\n**{frameworks.MODE_TITLES[mode]}** — ms per call (wall: {wall})\n",
             "| op class | JAX ms | PyTorch ms | JAX − PyTorch |", "|---|---|---|---|"]
    for c in CLASSES:
        j = jx["classes"].get(c, 0.0)
        t = pt["classes"].get(c, 0.0) if pt else None
        if abs(j) < 0.05 and not t:
            continue
        lines.append(f"| {c} | {j:.0f} | " + ("—" if t is None else f"{t:.0f}") + " | "
                     + ("—" if t is None else f"{j - t:+.0f}") + " |")
    if jx["slowest"]:
        lines += ["", "slowest JAX instructions: " + "; ".join(
            f"{n} ({c}, {s}) {ms:.1f} ms" for n, ms, c, s in jx["slowest"])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="litemedsam",
                   choices=["litemedsam", "medsam_vit_b", "tiny_vit_b", "tiny_litemedsam"])
    p.add_argument("--weights", choices=["random", "pretrained"], default="random")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--calls", type=int, default=2, help="profiled calls per mode (averaged)")
    p.add_argument("--modes", nargs="+", choices=frameworks.MODES, default=list(frameworks.MODES))
    p.add_argument("--no-torch", action="store_true", help="the JAX side only")
    p.add_argument("--top", type=int, default=8, help="list the N slowest JAX instructions")
    p.add_argument("--out", default=None, help="write the JSON results here")
    args = p.parse_args(argv)
    if jax.default_backend() != "cpu":
        raise SystemExit("profile_breakdown.py classes XLA:CPU's per-instruction events; on "
                         f"{jax.default_backend()} open a jax.profiler trace in TensorBoard")
    small = args.backbone.startswith("tiny")
    cfg = AutoMedSamConfig(SamConfig.preset(args.backbone),
                           TINY_CLASS_PROMPT if small else ClassPromptConfig())
    if args.weights == "pretrained":
        from automedsam_jax.io.checkpoint import pretrained_automedsam
        from automedsam_jax.io.weights import pretrained_litemedsam
        model = pretrained_automedsam(pretrained_litemedsam(), cfg.class_prompt)
    else:
        model = random_model(cfg, seed=0)
    inputs = frameworks.make_inputs(cfg, args.batch)
    with jax.default_matmul_precision("highest"):
        embeddings = np.asarray(jax.jit(lambda m, x: m.embed(x))(model, inputs["image"]))
    jax_side = frameworks.JaxSide(cfg, model, inputs, embeddings)
    torch_side = None if args.no_torch else frameworks.TorchSide(
        cfg, model, np.array(jax_side.trainee.loss_weights.sigma[...]), inputs, embeddings)
    hw = frameworks.hardware()
    print(f"# AutoMedSAM {args.backbone} ({args.weights} weights), batch {args.batch}, float32, "
          f"{args.calls} profiled call(s) per mode; JAX {hw['jax']}, PyTorch {hw['torch']} "
          f"({hw['torch_threads']} threads), CPU {hw['cpu']} ({hw['cpu_count']} cores)")
    result = {"args": vars(args), "hardware": hw, "modes": {}}
    for mode in args.modes:
        jx = profile_jax(jax_side, mode, args.calls, args.top)
        pt = None if torch_side is None else profile_torch(torch_side, mode, args.calls)
        result["modes"][mode] = {"jax": jx, "torch": pt}
        print(report(mode, jx, pt), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
