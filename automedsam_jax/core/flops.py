"""Model FLOPs utilisation (MFU): achieved FLOP/s over the chips' dense peak.

The FLOPs of one call are XLA's cost analysis of the lowered (not yet partitioned) program, so
they are the whole global batch's, counted once whatever the mesh; MFU divides the achieved
rate by the peak of every device the program runs on. The peak is a table of dense TFLOP/s by
device kind (the vendors' data sheets, no sparsity): float32 without TF32 on GPUs, bfloat16
tensor cores / MXUs for ``bfloat16``. On a TPU a float32 matmul runs on the bfloat16 MXUs at
JAX's default precision, so both dtypes take the bfloat16 peak there. A CPU has no entry: its
peak depends on the model, clock and vector units (the benchmarks take ``--peak-tflops``), so no
MFU is claimed for it unless a peak is given (``train.py --peak-tflops``,
``benchmarks/frameworks.py --peak-tflops``).
"""

from __future__ import annotations

from typing import Literal

import jax

PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 51.0, 756.0), ("H100 NVL", 60.0, 835.0), ("H100", 67.0, 989.0),
    ("H200", 67.0, 989.0), ("A100", 19.5, 312.0),
    ("TPU v6 lite", 918.0, 918.0), ("TPU v5 lite", 197.0, 197.0), ("TPU v5", 459.0, 459.0),
    ("TPU v4", 275.0, 275.0))
"""``(device-kind substring, float32, bfloat16)`` dense peak TFLOP/s per device, most specific
first (``jax.Device.device_kind``: "NVIDIA H100 80GB HBM3", "TPU v5 lite", ...)."""

Dtype = Literal["float32", "bfloat16"]


def peak_tflops(kind: str, dtype: Dtype) -> float | None:
    """The dense peak TFLOP/s of one device of ``kind`` computing in ``dtype``; None when the
    table has no entry (CPUs, other accelerators)."""
    for name, fp32, bf16 in PEAK_TFLOPS:
        if name in kind:
            return bf16 if dtype == "bfloat16" else fp32
    return None


def lowered_flops(lowered: jax.stages.Lowered) -> float | None:
    """FLOPs of one call of a lowered program (XLA's cost analysis; None where the backend
    gives none)."""
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def mfu(flops_per_call: float | None, seconds_per_call: float, dtype: Dtype,
        devices=None, peak_per_device: float | None = None) -> float | None:
    """Achieved FLOP/s over the summed peak of ``devices`` (default: every device), as a fraction;
    ``peak_per_device`` (TFLOP/s) overrides the table (a CPU, another chip). None when the FLOPs
    or a device's peak are unknown."""
    devices = jax.devices() if devices is None else list(devices)
    peaks = [peak_per_device or peak_tflops(d.device_kind, dtype) for d in devices]
    if flops_per_call is None or seconds_per_call <= 0 or None in peaks:
        return None
    return flops_per_call / seconds_per_call / (sum(peaks) * 1e12)


__all__ = ["PEAK_TFLOPS", "peak_tflops", "lowered_flops", "mfu"]
