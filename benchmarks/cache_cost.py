"""When to cache embeddings: online-encoder vs cached training, img/s per chip, from FLOPs, peak
FLOP/s and storage read bandwidth.

    python benchmarks/cache_cost.py                          # the table in docs/speed.md
    python benchmarks/cache_cost.py --mfu 0.5 --bandwidth-gbs 1 4 16 --dtype float32

Online training runs the frozen encoder's forward and the trained part's forward + backward on
every image: ``F_online = F_encoder + F_trained``; cached training reads an embedding instead
(``g²·C`` values: 2 MiB in bfloat16, 4 MiB in float32 at 64×64×256) and computes ``F_trained``.
Per chip, at a fraction ``mfu`` of the peak ``P``:

    online  = mfu·P / F_online
    cached  = min(mfu·P / F_trained, bandwidth / (chips per host · bytes per embedding))

Building the cache costs one encoder forward per slice and variant (flips × augmentation), so it
pays back after ``epochs* = variants·F_encoder / (F_online − mfu·P / cached)`` epochs (∞ when
cached is not faster). FLOPs are XLA's cost analysis of the JAX functions
(``python benchmarks/frameworks.py``: LiteMedSAM inference 106.2 GFLOP/img, online step 148.8,
cached step 64.1; MedSAM ViT-B inference 1010 GFLOP): the encoder is the online step minus the
cached step, ViT-B's trained part is LiteMedSAM's (same decoder, same 64×64×256 embedding).
Peaks are the published dense bf16 figures; this CPU's row uses the img/s measured by
``frameworks.py`` (JAX fp32, batch 2) instead of a peak.
"""

from __future__ import annotations

import argparse
import math

GFLOP = 1e9
# XLA cost analysis of the JAX functions, GFLOP per image (benchmarks/frameworks.py).
LITE_ONLINE, LITE_CACHED, LITE_INFER, VITB_INFER = 148.8, 64.1, 106.2, 1010.0
TRAINED = LITE_CACHED                                   # class prompt encoder + decoder, fwd+bwd
DECODE_FWD = LITE_INFER - (LITE_ONLINE - LITE_CACHED)   # what inference adds to the encoder
ENCODER = {"litemedsam": LITE_ONLINE - LITE_CACHED, "medsam_vit_b": VITB_INFER - DECODE_FWD}
EMBEDDING_VALUES = 64 * 64 * 256
BYTES = {"bfloat16": 2, "float32": 4}

# name, dense bf16 peak TFLOP/s per chip, chips per host (one storage link per host)
ACCELERATORS = (("H100 SXM", 989.0, 8), ("TPU v5e", 197.0, 8), ("TPU v5p", 459.0, 4))
# this 2-core CPU: measured JAX fp32 img/s (online step, cached step), frameworks.py, batch 2
CPU_MEASURED = {"litemedsam": (0.559, 1.21)}


def rates(peak_flops: float, backbone: str, bandwidth: float, chips: int,
          embedding_bytes: int) -> tuple[float, float, float]:
    """(online img/s, cached img/s limited by compute, cached img/s limited by storage) per
    chip, ``peak_flops`` already scaled by the MFU."""
    online = peak_flops / ((ENCODER[backbone] + TRAINED) * GFLOP)
    compute = peak_flops / (TRAINED * GFLOP)
    storage = bandwidth / (chips * embedding_bytes)
    return online, compute, storage


def payback_epochs(online: float, cached: float, backbone: str, variants: int) -> float:
    """Epochs after which caching (one encoder forward per slice and variant, then ``cached``
    img/s) has taken less time than training online at ``online`` img/s."""
    if cached <= online:
        return math.inf
    build = variants * ENCODER[backbone] / (ENCODER[backbone] + TRAINED) / online  # s per slice
    return build / (1 / online - 1 / cached)


def table(mfu: float, bandwidths: list[float], dtype: str, variants: int) -> str:
    nbytes = EMBEDDING_VALUES * BYTES[dtype]
    lines = [f"Per chip, MFU {mfu:.0%}, {dtype} embeddings ({nbytes / 2**20:.0f} MiB), "
             f"{variants} cached variant(s) per slice; storage bandwidth per host, shared by its "
             "chips; ✓: caching is faster.", "",
             "| accelerator | backbone | online img/s | cached, compute-bound | "
             + " | ".join(f"cached at {b:g} GB/s/host" for b in bandwidths)
             + " | caching wins above (GB/s/host) | pays back after |",
             "|---" * (6 + len(bandwidths)) + "|"]
    for name, peak, chips in ACCELERATORS:
        for backbone in ENCODER:
            online, compute, _ = rates(peak * 1e12 * mfu, backbone, 0, chips, nbytes)
            cached = [min(compute, b * 1e9 / (chips * nbytes)) for b in bandwidths]
            above = (f"{online * chips * nbytes / 1e9:,.1f}" if compute > online else "never")
            lines.append(f"| {name} | {backbone} | {online:,.0f} | {compute:,.0f} | "
                         + " | ".join(f"{c:,.0f} {'✓' if c > online else '✗'}" for c in cached)
                         + f" | {above} | "
                         + f"{_epochs(payback_epochs(online, max(cached), backbone, variants))} |")
    for backbone, (online, cached) in CPU_MEASURED.items():
        lines.append(f"| this CPU (2 cores, measured) | {backbone} | {online:.2f} | {cached:.2f} | "
                     + " | ".join(f"{cached:.2f} ✓" for _ in bandwidths)
                     + f" | {online * nbytes / 1e9:.3f} | "
                     + f"{_epochs(payback_epochs(online, cached, backbone, variants))} |")
    return "\n".join(lines)


def _epochs(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.1f} epochs"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mfu", type=float, default=0.4, help="fraction of the peak reached")
    p.add_argument("--bandwidth-gbs", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                   help="storage read bandwidth per host, GB/s")
    p.add_argument("--dtype", choices=sorted(BYTES), default="bfloat16")
    p.add_argument("--variants", type=int, default=1, help="embeddings per slice (4 with flips)")
    args = p.parse_args(argv)
    print(table(args.mfu, args.bandwidth_gbs, args.dtype, args.variants))


if __name__ == "__main__":
    main()
