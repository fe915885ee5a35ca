#!/usr/bin/env bash
# The accelerator run (issue 14), in one go on a machine with a GPU:
#   MedSAM ViT-B at batch 16 and LiteMedSAM at batch 16, every row (JAX fp32/bf16, PyTorch
#   eager/compile fp32/bf16), every mode (inference, training step, step from cached embeddings),
#   MFU printed for known GPUs (H100/H200/A100; --peak-tflops elsewhere), then evaluation
#   throughput with five classes. Weights are random (no download; speed does not depend on them).
#
#   pip install -e ".[torch,test]" && pip install -U "jax[cuda13]"    # or jax[cuda12]
#   bash benchmarks/accelerator.sh [OUT_DIR]                          # ~10 min on an H100
#
# Writes OUT_DIR/{device.txt, medsam_vit_b.{md,json}, litemedsam.{md,json}, eval_speed.md}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-accelerator-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

python - <<'EOF' | tee "$out/device.txt"
import jax, torch
print("jax", jax.__version__, jax.default_backend(), [d.device_kind for d in jax.devices()])
print("torch", torch.__version__, "cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
if jax.default_backend() != "gpu":
    raise SystemExit("JAX sees no GPU: pip install -U 'jax[cuda13]' (or jax[cuda12])")
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$out/device.txt" || true

python benchmarks/frameworks.py --backbone medsam_vit_b --batch 16 --repeats 3 --steps 3 \
    --out "$out/medsam_vit_b.json" | tee "$out/medsam_vit_b.md"
python benchmarks/frameworks.py --backbone litemedsam --batch 16 --repeats 3 --steps 3 \
    --out "$out/litemedsam.json" | tee "$out/litemedsam.md"
python benchmarks/eval_speed.py --presets litemedsam medsam_vit_b --batch-size 16 --batches 4 \
    | tee "$out/eval_speed.md"
echo "wrote $out"
