#!/usr/bin/env bash
# The accelerator run, on a machine with a GPU: every speed table of the README (JAX vs PyTorch
# with MFU for LiteMedSAM and MedSAM ViT-B, all vs one class per step, evaluation) and the
# environment in one folder, within ~6 minutes on one H100, then a summary for the README.
# See benchmarks/accelerator.py (its --dry-run checks the same code path on a CPU).
#
#   pip install -e ".[torch,test]" && pip install -U "jax[cuda13]"    # or jax[cuda12]
#   bash benchmarks/accelerator.sh [OUT_DIR] [--budget-s 270]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/accelerator.py "$@"
