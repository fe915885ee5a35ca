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
    assert flops_line(2e12, "float32", [cpu]).endswith("no MFU: no peak FLOP/s known for 'cpu'")
    assert "no MFU" in flops_line(None, "float32", [h100])
