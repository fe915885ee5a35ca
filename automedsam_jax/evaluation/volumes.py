"""Per-slice predictions → whole cases (3D volumes rebuilt from ``slice_index``/``depth``).

Slices may arrive in any order; a case is complete when its ``depth`` slices are in (the
validation and test splits hold every slice). Whatever is left at the end — cases of the
``train`` split, which stores only slices with foreground — is returned by
:meth:`VolumeAssembler.finish` as the stack of the slices present, in z order (its 3D NSD then
treats them as adjacent, so prefer the validation/test splits for 3D scores).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    """One case, original frame: ``gt`` and ``pred`` class ids ``(D, H, W)`` for a 3D case or
    ``(H, W)`` for a 2D image; ``spacing`` (z, y, x) mm for 3D, None for 2D (NSD τ in pixels);
    ``complete`` is False when slices were missing."""

    case_id: str
    gt: np.ndarray
    pred: np.ndarray
    spacing: tuple[float, float, float] | None
    complete: bool = True

    @property
    def num_slices(self) -> int:
        return 1 if self.gt.ndim == 2 else self.gt.shape[0]


class VolumeAssembler:
    """Collects ``(record, prediction)`` slices until their case is complete."""

    def __init__(self):
        self._slices: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._meta: dict[str, tuple[int, np.ndarray]] = {}

    def add(self, record: dict[str, Any], pred: np.ndarray) -> Case | None:
        """Add one slice (``record`` of :func:`automedsam_jax.data.eval_dataset`, ``pred``
        ``(H, W)``); returns its :class:`Case` once all ``depth`` slices are in."""
        case = str(record["case_id"])
        slices = self._slices.setdefault(case, {})
        slices[int(record["slice_index"])] = (np.asarray(record["label"]), np.asarray(pred))
        self._meta[case] = (int(record["depth"]), np.asarray(record["spacing"]))
        if len(slices) == self._meta[case][0]:
            return self._build(case, complete=True)
        return None

    def finish(self) -> list[Case]:
        """The incomplete cases (slices missing), each stacked from the slices present."""
        return [self._build(case, complete=False) for case in list(self._slices)]

    def _build(self, case: str, complete: bool) -> Case:
        slices = self._slices.pop(case)
        depth, spacing = self._meta.pop(case)
        gt = np.stack([slices[z][0] for z in sorted(slices)])
        pred = np.stack([slices[z][1] for z in sorted(slices)])
        if depth == 1:
            return Case(case, gt[0], pred[0], None, complete)
        return Case(case, gt, pred, tuple(float(s) for s in spacing), complete)
