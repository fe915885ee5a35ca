"""NIfTI voxel order ⇄ the radiological ``(z, y, x)`` arrays the models are trained on.

Training (:mod:`.demo`) and inference (:mod:`automedsam_jax.predict`) read a NIfTI volume the same
way: reoriented to the closest canonical (RAS+) orientation, then stored as ``(z, y, x)`` with
row 0 anterior and column 0 the patient's right (radiological display, like the challenge
files). :func:`from_radiological` is the exact inverse, so a label volume computed on the
radiological array lines up voxel for voxel with the file's own array (and its affine).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel import orientations

_RAS = orientations.axcodes2ornt(("R", "A", "S"))


def to_radiological(image: nib.spatialimages.SpatialImage, array: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A 3D image (or ``array`` in its voxel order, default its data) → ``(z, y, x)`` array with
    row 0 anterior and column 0 the patient's right, and the voxel spacing (z, y, x) in mm."""
    data = np.asanyarray(image.dataobj) if array is None else np.asarray(array)
    ras = orientations.apply_orientation(data, _to_ras(image))
    spacing = _spacing_ras(image)
    return np.ascontiguousarray(ras.transpose(2, 1, 0)[:, ::-1, ::-1]), spacing


def from_radiological(array: np.ndarray, image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Inverse of :func:`to_radiological`: a ``(z, y, x)`` radiological array → ``image``'s own
    voxel order (so it can be saved with ``image.affine``)."""
    ras = np.asarray(array)[:, ::-1, ::-1].transpose(2, 1, 0)
    back = orientations.ornt_transform(_RAS, orientations.io_orientation(image.affine))
    return np.ascontiguousarray(orientations.apply_orientation(ras, back))


def _to_ras(image) -> np.ndarray:
    return orientations.ornt_transform(orientations.io_orientation(image.affine), _RAS)


def _spacing_ras(image) -> np.ndarray:
    """Voxel sizes along the RAS axes, reversed to (z, y, x)."""
    zooms = np.asarray(image.header.get_zooms()[:3], np.float32)
    order = orientations.io_orientation(image.affine)[:, 0].astype(int)  # voxel axis → RAS axis
    ras = np.empty(3, np.float32)
    ras[order] = zooms
    return ras[::-1].copy()
