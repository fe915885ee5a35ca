"""JAX vs PyTorch on the same AutoMedSAM: inference, training step with the frozen encoder, and
training from cached embeddings, in float32 (highest matmul precision) and bf16, timed in
interleaved rounds so that the JAX/PyTorch ratios can be quoted with their spread.

    python benchmarks/frameworks.py --backbone litemedsam --weights pretrained --batch 2 \\
        --repeats 5 --modes infer train cached \\
        --rows jax-fp32 torch-eager-fp32 torch-compile-fp32 --out bench.json
    python benchmarks/frameworks.py --tiny            # seconds: the smoke test's configuration

Same backbone, same weights (drawn for the JAX model, converted to PyTorch with
``automedsam_jax.io.automedsam_conversion``; ``--weights pretrained`` takes LiteMedSAM's), same
batch, same inputs and the same diffusion noise (passed explicitly; inference uses the noise-free
mean), so both frameworks compute one function (see ``automedsam_references.torch_training`` for
the PyTorch side).

Rows: ``jax-fp32`` / ``jax-bf16`` (one ``jax.jit``; the training step is
``automedsam_jax.train.step.make_train_step``, state donated, metrics left on the device);
``torch-eager-*`` and ``torch-compile-*`` (``torch.compile`` of the forward+loss, backward
and the optimizer step eager). fp32 = float32 at highest matmul precision on both sides
(``jax_default_matmul_precision``, ``torch.set_float32_matmul_precision`` and no TF32
convolutions); bf16 = bf16 compute with float32 parameters, optimizer and loss (JAX: weights
cast inside the step; PyTorch: ``torch.autocast``).

Protocol, mode by mode: every row is first prepared — compiled (JAX: ``lower().compile()``,
timed; ``torch.compile``: its first call minus a median timed call), called once, then
``WARMUP`` more calls during which its peak memory is taken — and then the rows are timed in
``--repeats`` interleaved rounds (JAX, eager, compile, JAX, eager, compile, …), ``--steps``
calls per row per round, the device synchronised before the clock stops
(``block_until_ready`` / ``torch.cuda.synchronize``), so that drift of a shared machine falls
on every row. Each row shows its median and min–max img/s over the rounds; each JAX row's
ratio to each PyTorch row of its dtype (and to the best of them, by median) is taken round by
round and shown as the median and min–max of those per-round ratios. Every training row starts
from the same parameters and runs the same batch N = 1 + WARMUP + rounds·steps times; the loss
of call N sits next to its speed. Inference rows show the loss of their (deterministic) output
instead. Inputs are already on the device: the input pipeline is not timed
(``benchmarks/data_throughput.py`` measures it). ``--budget-s``: no row is prepared and no
round started after that many seconds (a row left out says so; at least one round runs).

FLOPs per image come from XLA's cost analysis of the float32 JAX function of each mode with its
native ops (no CPU rewrite; the same count is used for the PyTorch rows: same computation);
MFU = achieved FLOP/s (median round) / the device's peak (a table for H100/H200/A100,
``--peak-tflops`` elsewhere). Peak memory: on GPU, JAX: XLA's buffer assignment of the compiled
step (arguments + outputs + temporaries); PyTorch: the allocator's peak during the warm-up calls
above what was allocated before the row's model was built; on CPU the growth of the process RSS
during the warm-up calls above its level before them, sampled every 2 ms (both frameworks).

Prints Markdown tables (rows, then ratios) and the ViT-B analytic FLOPs cross-check, and writes
JSON (``--out``) with every round's time of every row and every per-round ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from automedsam_jax.core.automedsam import AutoMedSAM, AutoMedSamOutput
from automedsam_jax.core.config import (TINY_CLASS_PROMPT, AutoMedSamConfig,
                                        ClassPromptConfig, LossConfig, SamConfig, ViTConfig)
from automedsam_jax.core.init import random_model
from automedsam_jax.core.losses import LossWeights, joint_loss
from automedsam_jax.core.modeling import Sam
from automedsam_jax.core import backend
from automedsam_jax.core.cpu import cpu_info
from automedsam_jax.core.flops import peak_tflops
from automedsam_jax.core.preprocess import mask_box
from automedsam_jax.data.sample import shape_distance_map
from automedsam_jax.train.optim import Trainee, adamw
from automedsam_jax.train.step import (batch_sharding, data_mesh, forward,
                                       init_state, make_train_step, replicated)

ROWS = ("jax-fp32", "jax-bf16", "torch-eager-fp32", "torch-eager-bf16", "torch-compile-fp32",
        "torch-compile-bf16")
MODES = ("infer", "train", "cached")
MODE_TITLES = {"infer": "inference (image → mask)",
               "train": "training step, frozen encoder inside",
               "cached": "training step from cached embeddings"}
WARMUP = 2
"""Calls after the first one and before the rounds; peak memory is taken during them."""


@dataclasses.dataclass
class Row:
    mode: str
    row: str
    framework: str
    variant: str
    dtype: str
    times_s: list[float] = dataclasses.field(default_factory=list)
    """One entry per round: the seconds of its ``steps`` calls."""
    images_per_call: int = 0
    steps: int = 1
    first_call_s: float | None = None
    compile_s: float | None = None
    peak_mem_mib: float | None = None
    mem_kind: str = ""
    loss: float | None = None
    loss_steps: int = 0
    gflop_per_image: float | None = None
    mfu: float | None = None
    note: str = ""
    error: str | None = None

    @property
    def images_per_s(self) -> list[float]:
        """Per round."""
        return [self.images_per_call * self.steps / t for t in self.times_s]

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.times_s)

    def median(self) -> float:
        return statistics.median(self.images_per_s)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        ips = self.images_per_s
        d["images_per_s"] = ips
        d["images_per_s_median"] = statistics.median(ips) if ips else None
        d["images_per_s_min"] = min(ips) if ips else None
        d["images_per_s_max"] = max(ips) if ips else None
        return d


@dataclasses.dataclass
class Prepared:
    """A row ready to be timed: ``call`` runs it once, ``sync`` waits for the device,
    ``memory`` (a context manager) takes its peak memory around the warm-up calls, ``finish``
    fills the row's loss after the rounds."""
    row: Row
    call: Callable[[], None]
    sync: Callable[[], None]
    memory: contextlib.AbstractContextManager
    finish: Callable[[], None]


# -- measurement helpers -----------------------------------------------------------------------
def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the high-water mark (only ever grows)
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssPeak:
    """Peak RSS growth above the level at ``start()``, sampled in a thread."""

    def __init__(self, period_s: float = 0.002):
        self.period_s, self.base, self.peak = period_s, 0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.period_s)

    def start(self):
        self.base = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return (self.peak - self.base) / 2 ** 20


@contextlib.contextmanager
def rss_growth(row: Row):
    """Sets ``row``'s peak memory to the RSS growth over the block (CPU, both frameworks)."""
    rss = RssPeak()
    rss.start()
    try:
        yield
    finally:
        row.peak_mem_mib, row.mem_kind = rss.stop(), "RSS growth"


def failure(e: Exception) -> str:
    traceback.print_exc(limit=3)
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def warm_up(p: Prepared) -> None:
    """The first call (timed: ``torch.compile`` compiles in it), then ``WARMUP`` calls inside
    ``p.memory``."""
    t = time.perf_counter()
    p.call()
    p.sync()
    p.row.first_call_s = time.perf_counter() - t
    with p.memory:
        for _ in range(WARMUP):
            p.call()
        p.sync()


def time_rounds(live: list[Prepared], repeats: int, steps: int,
                deadline: float | None = None) -> None:
    """``repeats`` rounds, each timing ``steps`` calls of every row in turn; a row that raises
    is reported failed and left out of later rounds. After ``deadline`` (``perf_counter``) no
    new round starts (the first always runs)."""
    live = list(live)
    for r in range(repeats):
        if r and deadline is not None and time.perf_counter() > deadline:
            break
        for p in list(live):
            try:
                t = time.perf_counter()
                for _ in range(steps):
                    p.call()
                p.sync()
                p.row.times_s.append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001 - report the row as failed and go on
                p.row.error = failure(e)
                live.remove(p)


def ratios(rows: list[Row]) -> list[dict]:
    """Img/s ratios round by round (rounds are interleaved, so round r of every row ran at the
    same time; > 1: ``row`` faster than ``vs``) with their median, min and max: each JAX row vs
    each PyTorch row of its mode and dtype (``best`` marks the PyTorch row of highest median
    img/s), and each bf16 row vs the fp32 row of its framework and variant."""
    pairs = []
    for mode in MODES:
        ok = [r for r in rows if r.mode == mode and r.ok]
        for dtype in ("fp32", "bf16"):
            torch_rows = [r for r in ok if r.framework == "torch" and r.dtype == dtype]
            best = max(torch_rows, key=Row.median, default=None)
            pairs += [(j, t, t is best) for j in ok if j.framework == "jax" and j.dtype == dtype
                      for t in torch_rows]
        pairs += [(r, f, False) for r in ok for f in ok if r.dtype == "bf16"
                  and f.dtype == "fp32" and (f.framework, f.variant) == (r.framework, r.variant)]
    out = []
    for a, b, best in pairs:
        per = [x / y for x, y in zip(a.images_per_s, b.images_per_s)]
        out.append({"mode": a.mode, "row": a.row, "vs": b.row, "best": best, "per_round": per,
                    "median": statistics.median(per), "min": min(per), "max": max(per)})
    return out


# -- inputs --------------------------------------------------------------------------------
def make_inputs(cfg: AutoMedSamConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Images, class ids, an elliptical GT mask per sample with its box and distance map, and
    one standard-normal diffusion draw ε (NHWC)."""
    rs = np.random.RandomState(seed)
    S, L = cfg.sam.image_size, cfg.sam.low_res_size
    g, C = cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    yy, xx = np.mgrid[:L, :L]
    masks, boxes, dists = [], [], []
    for _ in range(batch):
        cy, cx = rs.uniform(0.3, 0.7, 2) * L
        ry, rx = rs.uniform(0.1, 0.25, 2) * L
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks.append(m.astype(np.float32))
        boxes.append(mask_box(m) * (S / L))
        dists.append(shape_distance_map(m))
    return {"image": rs.rand(batch, S, S, 3).astype(np.float32),
            "class_id": (np.arange(batch) % 3 + 1).astype(np.int32),
            "mask": np.stack(masks), "box": np.stack(boxes).astype(np.float32),
            "dist": np.stack(dists), "noise": rs.randn(batch, g, g, C).astype(np.float32)}


# -- FLOPs -----------------------------------------------------------------------------------
def flops(fn, *args) -> float:
    """XLA's count for ``fn`` with the layers' native ops (``backend_options(cpu_rewrites=False)``):
    the model as written, the same on every backend, whatever CPU formulation runs."""
    with backend.backend_options(cpu_rewrites=False):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def encoder_flops(cfg: SamConfig, batch: int = 1) -> float:
    """XLA's FLOPs of the image encoder alone on a shape-only model (per ``batch`` images)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Sam(cfg, rngs=nnx.Rngs(0))).image_encoder)
    images = jax.ShapeDtypeStruct((batch, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return flops(lambda s, x: nnx.merge(graphdef, s)(x), state, images)


def vit_encoder_flops(enc: ViTConfig) -> float:
    """Analytic FLOPs (2 per multiply-add, matmuls and convolutions only) of one image through
    SAM's ViT encoder, as the code computes it: windowed blocks run their qkv/proj projections and
    attention on the grid zero-padded to whole windows (64 → 70 at window 14), global blocks on
    the g² tokens; the decomposed relative-position terms are counted; norms, softmax and GELU
    are not. ViT-B at 1024²: ≈ 0.97 TFLOP."""
    g, D, hidden = enc.embedding_size, enc.embed_dim, int(enc.embed_dim * enc.mlp_ratio)
    n = g * g
    total = 2 * n * (enc.patch_size ** 2 * 3) * D                       # patch embedding
    for i in range(enc.depth):
        if i in enc.global_attn_indexes:
            tokens, keys, side = n, n, g
        else:
            w = enc.window_size
            tokens, keys, side = (-(-g // w) * w) ** 2, w * w, w
        total += 2 * tokens * D * 3 * D + 2 * tokens * D * D              # qkv, proj
        total += 2 * 2 * tokens * keys * D                               # q·kᵀ, p·v
        total += 2 * 2 * tokens * side * D                               # rel-pos h and w
        total += 2 * 2 * n * D * hidden                                  # MLP
    total += 2 * n * D * enc.out_chans + 2 * n * enc.out_chans ** 2 * 9  # neck 1×1, 3×3
    return float(total)


# -- JAX rows --------------------------------------------------------------------------------
class JaxSide:
    def __init__(self, cfg: AutoMedSamConfig, model: AutoMedSAM, inputs: dict, embeddings):
        self.cfg, self.mesh = cfg, data_mesh()
        self.tx = adamw()
        self.trainee = Trainee(model, LossWeights(LossConfig()))
        self.state0, self.frozen, self.graphdef = init_state(self.trainee, self.tx, self.mesh)
        data = batch_sharding(self.mesh)
        self.batch = {k: jax.device_put(v, data) for k, v in inputs.items()}
        self.batch["embedding"] = jax.device_put(embeddings, data)
        self.key = jax.random.key(0)
        self.on_gpu = jax.default_backend() != "cpu"

    def _infer_fn(self, dt):
        gd = self.graphdef
        rep, data = replicated(self.mesh), batch_sharding(self.mesh)

        def infer(params, frozen, images, ids):
            out = forward(nnx.merge(gd, params, frozen).model, images, ids, encoder_dtype=dt,
                          compute_dtype=dt)
            return out.low_res_logits, out.sparse, out.dense
        return jax.jit(infer, in_shardings=(rep, rep, data, data))

    def _loss_of(self, out) -> float:
        """The JAX joint loss of an inference output (outside the timing)."""
        trainee = nnx.merge(self.graphdef, self.state0["params"], self.frozen)
        low, sparse, dense = out
        total, _ = jax.jit(lambda t, o, b: joint_loss(o, b, t.model.teacher(b["box"]),
                                                      t.loss_weights))(
            trainee, AutoMedSamOutput(low, None, sparse, dense), self.batch)
        return float(total)

    def lower(self, mode: str, dt):
        """(jitted function, its arguments) for ``mode``; training arguments get a fresh state."""
        b = self.batch
        if mode == "infer":
            return self._infer_fn(dt), (self.state0["params"], self.frozen, b["image"],
                                        b["class_id"])
        cached = mode == "cached"
        step = make_train_step(self.graphdef, self.tx, self.mesh, cached=cached,
                               encoder_dtype=dt, compute_dtype=dt)
        other = "image" if cached else "embedding"
        state = jax.tree.map(jnp.copy, self.state0)
        return step, (state, self.frozen, {k: v for k, v in b.items() if k != other}, self.key)

    def flops(self, mode: str) -> float:
        """XLA's FLOPs of one call of the float32 function of ``mode`` (from its lowering), with
        the native ops (``backend_options(cpu_rewrites=False)``): the count of the model as written,
        the same on
        every backend and for PyTorch, whatever CPU rewrite runs."""
        with (jax.default_matmul_precision("highest"),
              backend.backend_options(cpu_rewrites=False)):
            fn, args = self.lower(mode, jnp.float32)
            cost = fn.lower(*args).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"])

    def prepare(self, mode: str, dtype: str):
        """Compile ``mode`` in ``dtype`` (fp32: highest matmul precision): (compiled, compile
        seconds, ``call`` running it once on its own output state, ``sync``, ``holder`` with
        the last ``args`` and ``out``)."""
        dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
        with jax.default_matmul_precision("highest" if dtype == "fp32" else "default"):
            fn, args = self.lower(mode, dt)
            t = time.perf_counter()
            compiled = fn.lower(*args).compile()
            compile_s = time.perf_counter() - t
        holder = {"args": args, "out": None}

        if mode == "infer":
            def call():
                holder["out"] = compiled(*holder["args"])
        else:
            def call():
                state, frozen, batch, key = holder["args"]
                state, metrics = compiled(state, frozen, batch, key)
                holder["args"], holder["out"] = (state, frozen, batch, key), metrics

        def sync():  # the whole output: the updated state as well as the metrics
            jax.block_until_ready((holder["out"], holder["args"][0]))
        return compiled, compile_s, call, sync, holder

    def start(self, row: Row) -> Prepared:
        """Compile ``row`` (its mode and dtype), note its attention calls and XLA's buffer
        size, run the first and the warm-up calls."""
        backend.ATTENTION_CALLS.clear()
        compiled, row.compile_s, call, sync, holder = self.prepare(row.mode, row.dtype)
        row.note = "attention: " + ", ".join(f"{k}×{v}" for k, v in
                                             sorted(backend.ATTENTION_CALLS.items()))
        args = holder["args"]
        row.images_per_call = int(np.size(args[3] if row.mode == "infer"
                                          else args[2]["class_id"]))
        memory = contextlib.nullcontext() if self.on_gpu else rss_growth(row)
        if self.on_gpu:
            mem = compiled.memory_analysis()
            if mem is not None:
                row.mem_kind = "XLA buffers"
                row.peak_mem_mib = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                    + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2 ** 20

        def finish():
            row.loss = (self._loss_of(holder["out"]) if row.mode == "infer"
                        else float(holder["out"]["loss"]))
        p = Prepared(row, call, sync, memory, finish)
        warm_up(p)
        return p


# -- PyTorch rows ----------------------------------------------------------------------------
class TorchSide:
    def __init__(self, cfg: AutoMedSamConfig, model: AutoMedSAM, sigma: np.ndarray,
                 inputs: dict, embeddings: np.ndarray, force_cpu_bf16: bool = False):
        import torch

        from automedsam_references import torch_training
        self.torch, self.ts = torch, torch_training
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg, self.jax_model, self.sigma = cfg, model, sigma
        self.force_cpu_bf16 = force_cpu_bf16

        def nchw(x):  # copies: never a view of a JAX buffer
            return torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), device=self.device)

        def t(x):
            return torch.tensor(x, device=self.device)

        self.args = {"image": nchw(inputs["image"]), "embedding": nchw(embeddings),
                     "noise": nchw(inputs["noise"]), "class_id": t(inputs["class_id"]),
                     "mask": t(inputs["mask"]), "dist": t(inputs["dist"]), "box": t(inputs["box"])}
        self.on_gpu = self.device != "cpu"

    def sync(self):
        if self.on_gpu:
            self.torch.cuda.synchronize()

    def skip_reason(self, dtype: str) -> str | None:
        if dtype == "bf16" and not self.on_gpu and not self.force_cpu_bf16 \
                and not cpu_has_native_bf16():
            return ("skipped: no native bf16 on this CPU (no avx512_bf16/amx_bf16 flag), where "
                    "PyTorch's bf16 convolutions run ~100× slower than fp32 (a 3×3 64→64 "
                    "conv at 128², batch 2: 23 s vs 0.18 s); --force-cpu-bf16 runs it")
        return None

    def prepare(self, mode: str, dtype: str, variant: str = "eager"):
        """(model, ``call`` running ``mode`` once — a training step updates the model —,
        ``holder`` with its ``out``)."""
        torch, a = self.torch, self.args
        model = self.ts.build(self.cfg, self.jax_model, self.sigma, self.device)
        infer, loss_fn = self.ts.make_fns(model, self.device, dtype == "bf16",
                                          cached=mode == "cached")
        if variant == "compile":
            infer, loss_fn = torch.compile(infer), torch.compile(loss_fn)
        holder = {}
        if mode == "infer":
            def call():
                with torch.no_grad():
                    holder["out"] = infer(a["image"], a["class_id"])
        else:
            opt = self.ts.adamw(model, self.device)
            x = a["embedding"] if mode == "cached" else a["image"]

            def call():
                opt.zero_grad(set_to_none=True)
                total, _ = loss_fn(x, a["class_id"], a["noise"], a["mask"], a["dist"], a["box"])
                total.backward()
                opt.step()
                holder["out"] = total.detach()
        return model, call, holder

    @contextlib.contextmanager
    def _cuda_peak(self, row: Row, base: int):
        cuda = self.torch.cuda
        cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            row.peak_mem_mib = (cuda.max_memory_allocated() - base) / 2 ** 20
            row.mem_kind = "device peak"

    def start(self, row: Row) -> Prepared | None:
        """Build ``row``'s model (and ``torch.compile`` it), run the first and the warm-up
        calls; ``None`` (``row.error`` says why) when the row is skipped."""
        row.error = self.skip_reason(row.dtype)
        if row.error:
            return None
        torch, a = self.torch, self.args
        base = torch.cuda.memory_allocated() if self.on_gpu else 0
        model, call, holder = self.prepare(row.mode, row.dtype, row.variant)
        row.images_per_call = a["class_id"].shape[0]

        def finish():
            if row.mode == "infer":  # the PyTorch joint loss of this row's output
                with torch.no_grad():
                    low, sparse, dense = holder["out"]
                    total, _ = self.ts.joint_loss(low, sparse, dense, a, model.teacher(a["box"]),
                                                  model.sigma)
                row.loss = float(total)
            else:
                row.loss = float(holder["out"])
        memory = self._cuda_peak(row, base) if self.on_gpu else rss_growth(row)
        p = Prepared(row, call, self.sync, memory, finish)
        warm_up(p)
        return p


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True  # cannot tell: let the row run
    return "avx512_bf16" in flags or "amx_bf16" in flags


# -- one mode ----------------------------------------------------------------------------------
def run_mode(mode: str, names: list[str], sides: dict, repeats: int, steps: int,
             deadline: float | None = None) -> list[Row]:
    """:func:`run_rows` of the rows ``names`` of ``mode`` (``framework-[variant-]dtype``, each
    started by its framework's side)."""
    torch_side = sides.get("torch")
    if torch_side and any(n.startswith("torch-compile") for n in names):
        torch_side.torch._dynamo.reset()  # a fresh cache per mode: no entry limit reached
    rows = []
    for name in names:
        fw, *variant, dtype = name.split("-")
        rows.append((Row(mode, name, fw, "jit" if fw == "jax" else variant[0], dtype,
                         steps=steps), sides[fw].start))
    out = run_rows(rows, repeats, steps, deadline)
    if torch_side and torch_side.on_gpu:
        torch_side.torch.cuda.empty_cache()
    return out


def run_rows(rows: list[tuple[Row, Callable[[Row], Prepared | None]]], repeats: int, steps: int,
             deadline: float | None = None) -> list[Row]:
    """Prepare every row with its ``start`` (in order; none after ``deadline``), time them in
    interleaved rounds, then read each row's loss; the prepared rows are freed on return."""
    live = []
    for row, start in rows:
        if deadline is not None and time.perf_counter() > deadline:
            row.error = "skipped: time budget (--budget-s) spent before this row"
            continue
        t0 = time.perf_counter()
        try:
            p = start(row)
        except Exception as e:  # noqa: BLE001 - report the row as failed and go on
            row.error = failure(e)
            if row.framework == "jax" and backend.ATTENTION_CALLS.get("cudnn"):
                row.error += " (cuDNN attention in use: retry with --attention xla)"
            p = None
        if p is not None:
            live.append(p)
        print(f"  {row.mode:>6} {row.row:<20} " + (row.error or f"prepared: compile "
              f"{fmt(row.compile_s)} s, first call {row.first_call_s:.2f} s") +
              f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    time_rounds(live, repeats, steps, deadline)
    for p in live:
        r = p.row
        try:
            if r.ok:
                p.finish()
                r.loss_steps = 1 + WARMUP + len(r.times_s) * steps
                if r.variant == "compile":
                    r.compile_s = max(r.first_call_s - statistics.median(r.times_s) / steps, 0.0)
        except Exception as e:  # noqa: BLE001
            r.error = failure(e)
        print(f"  {r.mode:>6} {r.row:<20} " + (r.error or (
            "img/s per round " + " ".join(f"{x:.3g}" for x in r.images_per_s)
            + f", loss {r.loss:.6g}")), flush=True)
    live = p = None  # noqa: F841 - frees the prepared rows' models and executables
    gc.collect()
    return [row for row, _ in rows]


# -- report ----------------------------------------------------------------------------------
def device_peak_tflops(kind: str, dtype: str, cpu_peak: list[float] | None) -> float | None:
    """The device's dense peak (automedsam_jax.core.flops' table), or ``--peak-tflops`` for a
    CPU (one value, or float32 then bf16)."""
    peak = peak_tflops(kind, "bfloat16" if dtype == "bf16" else "float32")
    if peak is None and cpu_peak:
        return cpu_peak[0] if dtype == "fp32" or len(cpu_peak) == 1 else cpu_peak[1]
    return peak


def hardware() -> dict:
    """What the figures were measured on: the devices, the CPU (model, extensions and family:
    automedsam_jax.core.cpu), the XLA flags in force (the user's and the family's, see
    core.cpu.XLA_CPU_FLAGS), the frameworks' versions and threads."""
    import torch
    cpu = cpu_info()
    return {"jax_device": jax.devices()[0].device_kind, "jax_backend": jax.default_backend(),
            "device_count": jax.device_count(), "cpu": cpu["model"],
            "cpu_extensions": cpu["extensions"], "cpu_family": cpu["family"],
            "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "torch_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(), "jax": jax.__version__,
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None}


def fmt(x, spec=".1f", dash="—"):
    return dash if x is None else format(x, spec)


def spread(values: list[float], spec: str = ".3g") -> str:
    return f"{min(values):{spec}}–{max(values):{spec}}"


def table(rows: list[Row], batch: int) -> str:
    """Markdown, one table of rows per mode."""
    lines = []
    header = ("| row | img/s (median of rounds) | min–max | rounds | ms/call | compile (s) | "
              "peak mem (MiB, {}) | GFLOP/img | TFLOP/s | MFU | loss (N) | note |")
    ncol = header.count("|") - 1
    for mode in MODES:
        sel = [r for r in rows if r.mode == mode]
        if not sel:
            continue
        mem_kind = ", ".join(dict.fromkeys(r.mem_kind for r in sel if r.mem_kind)) or "—"
        lines += [f"\n**{MODE_TITLES[mode]}**, batch {batch}\n", header.format(mem_kind),
                  "|" + "---|" * ncol]
        for r in sel:
            if not r.ok:
                error = r.error or "no round timed"
                status = "skipped" if error.startswith("skipped") else "failed"
                lines.append(f"| {r.row} | {status} |" + " |" * (ncol - 3) + f" {error[:240]} |")
                continue
            ips, med = r.images_per_s, r.median()
            tflops = None if r.gflop_per_image is None else med * r.gflop_per_image / 1e3
            mfu = "—" if r.mfu is None else f"{100 * r.mfu:.1f}%"
            loss = "—" if r.loss is None else (f"{r.loss:.6g}" + (
                f" ({r.loss_steps})" if r.mode != "infer" else ""))
            lines.append(
                f"| {r.row} | {med:.3g} | {spread(ips)} | {len(ips)} | "
                f"{1e3 * r.images_per_call / med:.0f} | {fmt(r.compile_s)} | "
                f"{fmt(r.peak_mem_mib, '.0f')} | {fmt(r.gflop_per_image, '.4g')} | "
                f"{fmt(tflops, '.3g')} | {mfu} | {loss} | {r.note} |")
    return "\n".join(lines)


def ratio_table(rs: list[dict]) -> str:
    """Markdown: every ratio with its spread over the rounds."""
    if not rs:
        return ""
    lines = ["\n**Ratios**, img/s of the row / img/s of the other, round by round (> 1: the row "
             "faster)\n", "| mode | row | vs | ratio (median of rounds) | min–max | rounds |",
             "|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['mode']} | {r['row']} | {r['vs']}"
                     + (" (best PyTorch)" if r["best"] else "") + f" | {r['median']:.2f}× | "
                     f"{spread(r['per_round'], '.2f')} | {len(r['per_round'])} |")
    return "\n".join(lines)


def speedups(rs: list[dict]) -> str:
    """One line: each JAX row vs the best PyTorch row of its mode and dtype, with the spread."""
    return "; ".join(f"{r['mode']} {r['row']}: {r['median']:.2f}× ({spread(r['per_round'], '.2f')}"
                     f" over {len(r['per_round'])} rounds, vs {r['vs']})"
                     for r in rs if r["best"])


# -- main ------------------------------------------------------------------------------------
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="litemedsam",
                   choices=["litemedsam", "medsam_vit_b", "tiny_vit_b", "tiny_litemedsam"])
    p.add_argument("--tiny", action="store_true",
                   help="tiny_vit_b with tiny class prompt widths: a smoke run of every path")
    p.add_argument("--weights", choices=["random", "pretrained"], default="random",
                   help="pretrained: LiteMedSAM's published weights (litemedsam only)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--steps", type=int, default=1, help="calls per row per round")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    p.add_argument("--budget-s", type=float, default=None,
                   help="prepare no row and start no round after this many seconds")
    p.add_argument("--force-cpu-bf16", action="store_true",
                   help="run the PyTorch bf16 rows on a CPU without native bf16 too")
    p.add_argument("--peak-tflops", type=lambda s: [float(x) for x in s.split(",")],
                   default=None, help="peak TFLOP/s of this device for MFU: FP32[,BF16] "
                   "(known GPUs are looked up)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU cores for both frameworks: pins the process to the first N cores "
                   "(XLA sizes its thread pool from the affinity) and sets PyTorch's intra-op "
                   "threads to N. Default: each framework's own default (all cores)")
    p.add_argument("--attention", choices=backend.ATTENTION_IMPLEMENTATIONS, default="auto",
                   help="JAX attention implementation (core/backend.py)")
    p.add_argument("--out", default=None, help="write the JSON results here")
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone = "tiny_vit_b"
    return args


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    with backend.backend_options(attention=args.attention):
        return _main(args, argv)


def _main(args, argv: list[str]) -> dict:
    start = time.perf_counter()
    deadline = None if args.budget_s is None else start + args.budget_s
    if args.threads:  # before the first JAX computation creates the CPU client's thread pool
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
        import torch
        torch.set_num_threads(args.threads)
    small = args.backbone.startswith("tiny")
    cfg = AutoMedSamConfig(SamConfig.preset(args.backbone),
                           TINY_CLASS_PROMPT if small else ClassPromptConfig())
    if args.weights == "pretrained":
        if args.backbone != "litemedsam":
            raise SystemExit("--weights pretrained exists for litemedsam only")
        from automedsam_jax.io.checkpoint import pretrained_automedsam
        from automedsam_jax.io.weights import pretrained_litemedsam
        model = pretrained_automedsam(pretrained_litemedsam(), cfg.class_prompt)
    else:
        model = random_model(cfg, seed=0)
    inputs = make_inputs(cfg, args.batch)
    hw = hardware()
    print(f"# AutoMedSAM {args.backbone} ({args.weights} weights), batch {args.batch}; per mode "
          f"every row compiled, 1 + {WARMUP} warm-up calls, then {args.repeats} interleaved "
          f"rounds × {args.steps} call(s); N = {1 + WARMUP + args.repeats * args.steps}")
    print(f"# JAX {hw['jax']} on {hw['jax_device']} ×{hw['device_count']}; PyTorch {hw['torch']} "
          f"on {hw['torch_device']} ({hw['torch_threads']} threads); CPU {hw['cpu']}, "
          f"{' '.join(hw['cpu_extensions']) or 'no AVX-512/AMX'} ({hw['cpu_count']} cores, "
          f"{hw['cpu_affinity']} used); XLA_FLAGS {hw['xla_flags'] or '(none)'}", flush=True)

    # Cached embeddings: the float32 JAX encoder's, given to both sides.
    with jax.default_matmul_precision("highest"):
        embeddings = np.asarray(jax.jit(lambda m, x: m.embed(x))(model, inputs["image"]))
    jax_side = JaxSide(cfg, model, inputs, embeddings)
    sides = {"jax": jax_side}
    if any(r.startswith("torch") for r in args.rows):
        sigma = np.array(jax_side.trainee.loss_weights.sigma[...])  # a copy
        sides["torch"] = TorchSide(cfg, model, sigma, inputs, embeddings, args.force_cpu_bf16)

    # FLOPs: XLA cost analysis per mode, and the encoder alone with the ViT analytic count.
    flops = {mode: jax_side.flops(mode) / args.batch / 1e9 for mode in args.modes}
    enc = encoder_flops(cfg.sam, 1) / 1e9
    flops_note = f"image encoder (XLA): {enc:.1f} GFLOP/img"
    if isinstance(cfg.sam.encoder, ViTConfig):
        analytic = vit_encoder_flops(cfg.sam.encoder) / 1e9
        flops_note += (f"; analytic ViT matmul count {analytic:.1f} GFLOP "
                       f"(XLA/analytic {enc / analytic:.3f})")
    print("# GFLOP/img (XLA, fp32 function): " + ", ".join(f"{m} {v:.1f}" for m, v in flops.items())
          + f"; {flops_note}", flush=True)

    rows: list[Row] = []
    for mode in args.modes:
        for row in run_mode(mode, args.rows, sides, args.repeats, args.steps, deadline):
            row.gflop_per_image = flops[mode]
            device = hw["jax_device"] if row.framework == "jax" else hw["torch_device"]
            peak = device_peak_tflops(device, row.dtype, args.peak_tflops)
            if row.ok and peak:
                row.mfu = row.median() * row.gflop_per_image / (peak * 1e3)
            rows.append(row)

    rs = ratios(rows)
    text = (f"CPU: {hw['cpu']}, {' '.join(hw['cpu_extensions']) or 'no AVX-512/AMX'} "
            f"({hw['cpu_family']}); XLA_FLAGS {hw['xla_flags'] or '(none)'}; JAX on "
            f"{hw['jax_device']}, PyTorch on {hw['torch_device']}\n\n"
            + table(rows, args.batch) + "\n" + ratio_table(rs))
    line = speedups(rs)
    print(text)
    if line:
        print(f"\nJAX / best PyTorch row, median (min–max) of per-round ratios: {line}")
    result = {"args": vars(args), "hardware": hw, "gflop_per_image": flops,
              "encoder_gflop_per_image": enc, "flops_note": flops_note, "warmup": WARMUP,
              "rows": [r.summary() for r in rows], "ratios": rs, "table": text,
              "speedups": line, "seconds": time.perf_counter() - start,
              "command": "python benchmarks/frameworks.py " + " ".join(argv)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
