"""Command line: convert a PyTorch SAM/MedSAM/LiteMedSAM checkpoint to a Flax model directory,
or export a Flax model directory back to a PyTorch state dict.

    python -m convert SRC.pth OUT_DIR [--model PRESET]     # from a checkout
    automedsam-convert SRC.pth OUT_DIR                      # installed
    python -m convert --to-torch OUT_DIR BACK.pth           # needs the [torch] extra

Reading ``.pth`` needs no torch (:mod:`automedsam_jax.io.torch_pickle`); writing one does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core.config import SAM_PRESETS
from .io.checkpoint import load_model, save_model
from .io.conversion import CheckpointMismatch, sam_from_torch, to_torch_state, unwrap_state_dict
from .io.torch_pickle import load_pth


def to_flax(src: Path, out_dir: Path, preset: str | None) -> None:
    state = unwrap_state_dict(load_pth(src), str(src))
    model = sam_from_torch(state, preset, source=str(src))
    save_model(model, out_dir, extra={"converted_from": str(src)})
    print(f"{src} → {out_dir} (preset {model.config.name}, {len(state)} tensors)")


def to_torch(model_dir: Path, dst: Path) -> None:
    try:
        import torch
    except ImportError:
        sys.exit("--to-torch writes a PyTorch file and needs torch: "
                 "pip install 'automedsam-jax[torch]'")
    model = load_model(model_dir)
    state = {k: torch.from_numpy(v) for k, v in to_torch_state(model).items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    print(f"{model_dir} → {dst} (preset {model.config.name}, {len(state)} tensors; load it with "
          "strict=True into the matching PyTorch model)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="automedsam-convert", description=__doc__)
    p.add_argument("src", type=Path,
                   help="SRC.pth (or, with --to-torch, a converted model directory)")
    p.add_argument("dst", type=Path,
                   help="OUT_DIR for the Flax model (or BACK.pth with --to-torch)")
    p.add_argument("--model", choices=sorted(SAM_PRESETS), default=None,
                   help="preset to convert to; inferred from tensor shapes when omitted "
                        "(a ViT-B file whose name contains 'medsam' becomes medsam_vit_b)")
    p.add_argument("--to-torch", action="store_true",
                   help="export a converted model directory SRC to a PyTorch state dict DST")
    args = p.parse_args(argv)
    try:
        if args.to_torch:
            to_torch(args.src, args.dst)
        else:
            to_flax(args.src, args.dst, args.model)
    except (CheckpointMismatch, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
