"""The host CPU, as speed figures must name it: its model and the vector / matrix extensions that
decide how fast XLA:CPU and PyTorch's oneDNN run a layer (AVX-512, its bf16 and VNNI parts,
Intel AMX). The same command gives other JAX / PyTorch ratios on an AMD Zen 4 (AVX-512 + BF16)
and an Intel Xeon with AMX, so every benchmark records this beside its figures."""

from __future__ import annotations

import importlib.metadata
import os
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


XLA_CPU_FLAGS: dict[str, tuple[str, ...]] = {
    # XLA:CPU 0.10 sends convolutions to YNNPACK, whose 3×3 weight gradient runs at ~50 GFLOP/s
    # on these CPUs against oneDNN's ~280; taking convolutions alone out of YNN keeps its bf16
    # AMX matmuls (docs/speed.md#xla-cpu-flags-per-cpu-family).
    "Intel with AMX": ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",),
}
"""CPU family (:func:`cpu_info`) → the XLA:CPU flags chosen for it by ``benchmarks/frameworks.py``
(a family not listed keeps XLA's defaults: the flags were measured to help only where listed)."""

XLA_FLAGS_JAXLIB = (0, 10)
"""The jaxlib series :data:`XLA_CPU_FLAGS` were measured on. Another jaxlib gets none of them: an
``XLA_FLAGS`` entry a jaxlib does not know aborts it, and a new XLA:CPU may not need them."""

OFF_VARIABLE = "AUTOMEDSAM_XLA_CPU_FLAGS"
"""``AUTOMEDSAM_XLA_CPU_FLAGS=off``: :func:`apply_xla_cpu_flags` adds nothing (XLA's defaults)."""


def _jaxlib_series() -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def xla_cpu_flags(info: dict | None = None, jaxlib: tuple[int, ...] | None = None
                  ) -> tuple[str, ...]:
    """The :data:`XLA_CPU_FLAGS` of this CPU's family (``info``: :func:`cpu_info`'s), none on a
    jaxlib series (``jaxlib``: the installed one when None) other than :data:`XLA_FLAGS_JAXLIB`."""
    info = cpu_info() if info is None else info
    jaxlib = _jaxlib_series() if jaxlib is None else jaxlib
    if tuple(jaxlib or ())[:2] != XLA_FLAGS_JAXLIB:
        return ()
    return XLA_CPU_FLAGS.get(info["family"], ())


def apply_xla_cpu_flags(environ: dict | None = None, info: dict | None = None,
                        jaxlib: tuple[int, ...] | None = None) -> tuple[str, ...]:
    """Append this CPU family's :func:`xla_cpu_flags` to ``environ["XLA_FLAGS"]``
    (``os.environ`` when None) and return those added. A flag whose name ``XLA_FLAGS`` sets
    already is left out (the user's choice wins), and nothing is added under
    ``AUTOMEDSAM_XLA_CPU_FLAGS=off``. Called when ``automedsam_jax`` is imported: XLA reads
    ``XLA_FLAGS`` once, when JAX starts its CPU backend, so a process that ran a JAX computation
    before importing the package keeps XLA's defaults. CPU flags only: a GPU or TPU runs as
    before."""
    environ = os.environ if environ is None else environ
    if environ.get(OFF_VARIABLE, "").lower() in ("off", "0", "false", "no"):
        return ()
    current = environ.get("XLA_FLAGS", "")
    named = {f.split("=", 1)[0] for f in current.split()}
    added = tuple(f for f in xla_cpu_flags(info, jaxlib) if f.split("=", 1)[0] not in named)
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


__all__ = ["EXTENSIONS", "OFF_VARIABLE", "XLA_CPU_FLAGS", "XLA_FLAGS_JAXLIB", "apply_xla_cpu_flags",
           "cpu_info", "describe", "xla_cpu_flags"]
