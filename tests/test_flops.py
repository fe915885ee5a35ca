"""MFU: the FLOPs XLA counts for a step, the peak table, and the arithmetic of the log line."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from automedsam_jax.core.flops import lowered_flops, mfu, peak_tflops
from automedsam_jax.train.loop import Throughput, flops_line


def test_lowered_flops_count_a_matmul_as_two_flops_per_multiply_add():
    m, k, n = 64, 48, 32
    a, b = jnp.ones((m, k)), jnp.ones((k, n))
    flops = lowered_flops(jax.jit(jnp.matmul).lower(a, b))
    assert flops == pytest.approx(2 * m * k * n, rel=0.01)


def test_peaks_by_device_kind_and_dtype():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "float32") == 67.0
    assert peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0   # not the SXM figure
    assert peak_tflops("NVIDIA A100-SXM4-40GB", "float32") == 19.5
    assert peak_tflops("TPU v5 lite", "float32") == 197.0           # fp32 runs on the MXUs
    assert peak_tflops("cpu", "float32") is None


def test_mfu_is_achieved_over_summed_peak():
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    # 989e12 FLOP in 2 s on two H100s at bf16: 989e12 / 2 / (2 × 989e12) = 0.25
    assert mfu(989e12, 2.0, "bfloat16", [h100, h100]) == pytest.approx(0.25)
    assert mfu(None, 1.0, "bfloat16", [h100]) is None
    assert mfu(1e12, 1.0, "float32", jax.devices("cpu")) is None     # no CPU peak


def test_throughput_reports_mfu_only_where_the_peak_is_known(monkeypatch):
    rate = Throughput(batch_size=4, devices=1, flops=2e12)
    assert rate.add(5.0) == (0.0, None)            # the compiling step is not counted
    ips, util = rate.add(0.5)
    assert ips == 8.0 and util is None             # CPU: no peak
    assert rate.epoch() == "8.00 img/s (8.00 per device, 1 device(s))"
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(jax, "devices", lambda *a: [h100])
    rate.add(0.5)
    # 2e12 FLOP in 0.5 s over 67e12 FLOP/s (fp32) = 5.97 %
    assert rate.epoch().endswith(f"MFU {100 * 2e12 / 0.5 / 67e12:.1f} %")
    assert "MFU against 1 × 67 TFLOP/s" in flops_line(2e12, "float32", [h100])
    cpu = types.SimpleNamespace(device_kind="cpu")
    assert flops_line(2e12, "float32", [cpu]).endswith(
        "no MFU: no peak FLOP/s known for 'cpu' (give --peak-tflops)")
    assert "no MFU" in flops_line(None, "float32", [h100])


def test_a_given_peak_gives_an_mfu_on_the_cpu():
    """``--peak-tflops``: the same formula against the given peak, where the table has none."""
    cpu = types.SimpleNamespace(device_kind="cpu")
    assert mfu(3e9, 0.5, "float32", [cpu, cpu], peak_per_device=1.5) == pytest.approx(
        3e9 / 0.5 / (2 * 1.5e12))
    rate = Throughput(batch_size=2, devices=1, flops=4e9, peak=2.0)
    rate.add(9.0)
    ips, util = rate.add(1.0)
    if jax.devices()[0].device_kind == "cpu":
        assert util == pytest.approx(4e9 / 1.0 / 2e12)            # 0.2 %
    assert rate.epoch().endswith("MFU 0.2 %")
    assert flops_line(4e9, "float32", [cpu], peak=2.0).endswith(
        "MFU against 1 × 2 TFLOP/s (cpu, --peak-tflops)")


AMD = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni
"""
INTEL = """model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_the_cpu_is_named_with_its_extensions_and_family():
    from automedsam_jax.core.cpu import cpu_info, describe
    amd, intel = cpu_info(AMD), cpu_info(INTEL)
    assert amd == {"model": "AMD EPYC 9R14 96-Core Processor", "family": "AMD",
                   "extensions": ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]}
    assert intel["family"] == "Intel with AMX"
    assert intel["extensions"] == ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
                                   "amx_bf16", "amx_int8"]
    assert describe(intel).startswith("Intel(R) Xeon(R) Platinum 8488C (avx2 avx512f")
