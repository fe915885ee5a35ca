"""The host CPU, as speed figures must name it: its model and the vector / matrix extensions that
decide how fast XLA:CPU and PyTorch's oneDNN run a layer (AVX-512, its bf16 and VNNI parts,
Intel AMX). The same command gives other JAX / PyTorch ratios on an AMD Zen 4 (AVX-512 + BF16)
and an Intel Xeon with AMX, so every benchmark records this beside its figures."""

from __future__ import annotations

import platform

EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
              "amx_int8")
"""The ``/proc/cpuinfo`` flags recorded, in this order."""


def cpu_info(cpuinfo: str | None = None) -> dict:
    """``{"model": ..., "extensions": [...], "family": ...}`` of this machine's CPU (``cpuinfo``:
    the text of ``/proc/cpuinfo``, read when None; elsewhere only the machine type is known).
    ``family`` is the label figures are grouped by: the vendor, and "with AMX" where it has it."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, flags = platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    extensions = [e for e in EXTENSIONS if e in flags]
    vendor = "AMD" if "AMD" in model else "Intel" if "Intel" in model else model
    family = vendor + (" with AMX" if "amx_tile" in flags else "")
    return {"model": model, "extensions": extensions, "family": family}


def describe(info: dict | None = None) -> str:
    """One line: ``"AMD EPYC (avx2 avx512f avx512_bf16 avx512_vnni)"``."""
    info = cpu_info() if info is None else info
    return f"{info['model']} ({' '.join(info['extensions']) or 'no AVX-512/AMX'})"


__all__ = ["EXTENSIONS", "cpu_info", "describe"]
