"""The options every command that segments slices with a model shares (evaluate, predict; train's
validation takes the batch): their configs nest :class:`InferenceConfig` (its options keep their
names)."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How slices are segmented: the batch and the 3-D post-processing."""

    batch_size: int = 4
    """slices embedded per model call"""
    postprocess: Literal["none", "3d"] = "none"
    """3d: per class, presence smoothed along z and the largest 3-D connected component of each
    volume (a 2D image keeps its largest component; automedsam_jax/inference/postprocess_3d.py)"""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
