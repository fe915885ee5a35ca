"""PyTorch ⇄ Flax conversion of SAM, MedSAM and LiteMedSAM checkpoints.

``python -m convert SRC.pth OUT_DIR [--model PRESET]`` and
``python -m convert --to-torch OUT_DIR BACK.pth``. Reading needs no torch; writing ``.pth`` does.
"""

from .params import CheckpointMismatch, infer_preset, load_state, sam_from_torch, to_torch_state
from .torch_pickle import load_pth

__all__ = ["CheckpointMismatch", "infer_preset", "load_pth", "load_state", "sam_from_torch",
           "to_torch_state"]
