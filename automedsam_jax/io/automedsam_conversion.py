"""AutoMedSAM checkpoints in the authors' PyTorch layout ⇄ Flax :class:`AutoMedSAM`.

The PyTorch state dict has four parts: ``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*`` (SAM's names, converted by :mod:`automedsam_jax.io.conversion`' table) and
``class_prmpt_encoder.*`` (the authors' misspelling; ``class_prompt_encoder`` in Flax, names
otherwise as in ``automedsam_references/torch_automedsam.py``). Every tensor must be used and every leaf
filled: all problems of all parts are collected into one :class:`CheckpointMismatch`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..core.automedsam import AutoMedSAM
from ..core.config import AutoMedSamConfig
from ..core.init import abstract_model
from .conversion import (CheckpointMismatch, load_state, problems, table, to_torch_state,
                         unwrap_state_dict)

# Flax attribute → PyTorch key prefix.
PARTS = {"image_encoder": "image_encoder.", "prompt_encoder": "prompt_encoder.",
         "mask_decoder": "mask_decoder.", "class_prompt_encoder": "class_prmpt_encoder."}


def automedsam_from_torch(state: Mapping, cfg: AutoMedSamConfig,
                          source: str = "checkpoint") -> AutoMedSAM:
    """A Flax :class:`AutoMedSAM` from a PyTorch AutoMedSAM state dict (wrappers and
    ``module.`` prefixes accepted)."""
    state = unwrap_state_dict(state, source)
    model = abstract_model(cfg)  # conversion never runs a random init
    parts = {attr: {k: v for k, v in state.items() if k.startswith(prefix)}
             for attr, prefix in PARTS.items()}
    stray = [k for k in state if not k.startswith(tuple(PARTS.values()))]
    found = [f"  {len(stray)} outside the four parts:\n    " + "\n    ".join(stray[:12])] if stray else []
    for attr, prefix in PARTS.items():
        found += problems(table(getattr(model, attr), prefix), parts[attr])
    if found:
        raise CheckpointMismatch(f"{source} does not fit AutoMedSAM on {cfg.sam.name!r} with "
                                 f"{cfg.class_prompt}:\n" + "\n".join(found))
    for attr, prefix in PARTS.items():
        load_state(getattr(model, attr), parts[attr], source, prefix)
    return model


def automedsam_to_torch(model: AutoMedSAM) -> dict[str, np.ndarray]:
    """Flax :class:`AutoMedSAM` → the authors' PyTorch state dict (NumPy arrays)."""
    if model.config.prompt != "class":
        raise ValueError(f"the authors' PyTorch AutoMedSAM has the class route only; a model "
                         f"trained with --prompt {model.config.prompt} (a localisation head) has "
                         "no counterpart in that layout (train with --prompt class for one)")
    if model.config.class_prompt.class_embedding != "scalar":
        raise ValueError("the authors' PyTorch AutoMedSAM takes the class id as a scalar only; a "
                         "model trained with a learned class embedding (--class-embedding "
                         "learned, the improved recipe) has no counterpart in that layout")
    out = {}
    for attr, prefix in PARTS.items():
        out.update(to_torch_state(getattr(model, attr), prefix))
    return out


__all__ = ["PARTS", "automedsam_from_torch", "automedsam_to_torch"]
