"""MFU: the FLOPs XLA counts for a step, the peak table, and the arithmetic of the log line; the
CPU as figures name it (core/cpu.py) and the XLA:CPU flags chosen per CPU family."""

import os
import subprocess
import sys
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


def test_each_cpu_family_gets_its_xla_flags_and_the_users_win():
    from automedsam_jax.core.cpu import (OFF_VARIABLE, XLA_CPU_FLAGS, XLA_FLAGS_JAXLIB,
                                         apply_xla_cpu_flags, cpu_info)
    intel, amd, series = cpu_info(INTEL), cpu_info(AMD), XLA_FLAGS_JAXLIB
    chosen = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
    assert XLA_CPU_FLAGS["Intel with AMX"] == (chosen,)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert apply_xla_cpu_flags(env, intel, series) == (chosen,)
    assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {chosen}"
    assert apply_xla_cpu_flags(env, intel, series) == ()  # named already: not twice
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}  # the user's choice wins
    assert apply_xla_cpu_flags(mine, intel, series) == ()
    assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
    for env, info, jaxlib in (({}, amd, series), ({}, intel, (0, 11)),
                              ({OFF_VARIABLE: "off"}, intel, series)):
        assert apply_xla_cpu_flags(env, info, jaxlib) == () and "XLA_FLAGS" not in env
    empty = {}
    assert apply_xla_cpu_flags(empty, intel, series) == (chosen,)
    assert empty["XLA_FLAGS"] == chosen


def test_the_chosen_flags_are_known_to_this_jaxlib_and_change_no_result(tmp_path):
    """Each family's flags, forced on this machine whatever its CPU: the installed jaxlib accepts
    them (an unknown XLA_FLAGS entry aborts it) and a convolution's value and gradients are
    those of XLA's defaults up to float rounding."""
    from automedsam_jax.core.cpu import XLA_CPU_FLAGS, XLA_FLAGS_JAXLIB, _jaxlib_series
    if _jaxlib_series() != XLA_FLAGS_JAXLIB:
        pytest.skip(f"jaxlib {_jaxlib_series()}: the flags are applied on {XLA_FLAGS_JAXLIB} only")
    code = ("import jax, jax.numpy as jnp, numpy as np, sys\n"
            "x = jax.random.normal(jax.random.key(0), (2, 16, 16, 8))\n"
            "w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))\n"
            "f = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
            "dimension_numbers=('NHWC', 'HWIO', 'NHWC')) ** 2)\n"
            "v, (gx, gw) = jax.jit(jax.value_and_grad(f, (0, 1)))(x, w)\n"
            "np.savez(sys.argv[1], v=v, gx=gx, gw=gw)\n")
    runs = {}
    for name, flags in {"default": (), **XLA_CPU_FLAGS}.items():
        out = tmp_path / f"{len(runs)}.npz"
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
        proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{name}: {flags}: {proc.stderr[-2000:]}"
        runs[name] = dict(np.load(out))
    assert len(runs) > 1
    for name, got in runs.items():
        for key, value in got.items():
            np.testing.assert_allclose(value, runs["default"][key], rtol=1e-4, atol=1e-3,
                                       err_msg=f"{name}: {key}")
