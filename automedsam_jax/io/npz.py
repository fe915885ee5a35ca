"""Reading and checking one CVPR 2024 "MedSAM on Laptop" challenge ``.npz`` file.

The format (``docs/method.md#data``): ``imgs`` is ``(H, W, 3)`` or ``(H, W)`` for 2D and ``(D, H,
W)`` uint8 for 3D; ``gts`` has the same spatial shape with integer labels; 3D files carry
``spacing`` (3 floats, mm, in the array's (z, y, x) order). :func:`load_npz` raises
:class:`BadInputError` naming the file; the ``npz_*`` checks raise ``ValueError`` with the problem,
for the caller to name the file (:func:`automedsam_jax.data.npz.read_npz` turns a file into class
ids per dataset).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..core.preprocess import as_slices, image_ndim
from .errors import BadInputError


def empty_problem(shape: tuple[int, ...], what: str = "'imgs'") -> str:
    """The problem of an image or volume ``what`` with no pixels (a ``(0, H, W)`` volume, say)."""
    kind = "a volume with no slices" if len(shape) == 3 and shape[0] == 0 else "an empty image"
    return (f"{what} is {kind} (shape {tuple(shape)}): nothing to segment; export the scan "
            "again with its slices")


def npz_image(imgs: np.ndarray, ndim: int) -> np.ndarray:
    """``imgs`` → ``(D, H, W, C)`` uint8 (:func:`automedsam_jax.core.preprocess.as_slices`'
    rule); raises ``ValueError`` with the problem (an empty image or volume included)."""
    if imgs.size == 0:
        raise ValueError(empty_problem(imgs.shape))
    if imgs.dtype != np.uint8:
        if imgs.dtype.kind == "f" and not np.all(np.isfinite(imgs)):
            raise ValueError("image contains NaN or Inf pixels")
        raise ValueError(f"image dtype is {imgs.dtype}, expected uint8 (16-bit and float images "
                         "must be windowed/clipped to uint8 first, see automedsam_jax.io.intensity)")
    slices = as_slices(imgs, ndim)
    return slices if slices.ndim == 4 else slices[..., None]


def npz_ndim(arrays: dict[str, np.ndarray]) -> int:
    """2 or 3 for a file that does not say: 3 when it carries ``spacing`` (the challenge's 3D
    files do), else by the shape of ``imgs`` (:func:`automedsam_jax.core.preprocess.image_ndim`)."""
    return 3 if "spacing" in arrays else image_ndim(arrays["imgs"])


def npz_labels(gts: np.ndarray) -> np.ndarray:
    """``gts`` → uint8 raw labels; raises ``ValueError`` for non-integer or out-of-range values."""
    if gts.dtype.kind == "b":
        return gts.astype(np.uint8)
    if gts.dtype.kind == "f":
        if not np.all(np.isfinite(gts)) or not np.all(gts == np.round(gts)):
            raise ValueError(f"labels ({gts.dtype}) contain non-integer values")
    elif gts.dtype.kind not in "iu":
        raise ValueError(f"labels have dtype {gts.dtype}, expected integers")
    lo, hi = gts.min(), gts.max()
    if lo < 0 or hi > 255:
        raise ValueError(f"labels out of range [0, 255]: min {lo}, max {hi}")
    return gts.astype(np.uint8)


def npz_spacing(spacing: np.ndarray | None) -> np.ndarray:
    if spacing is None:
        raise ValueError("3D file has no 'spacing'")
    spacing = np.asarray(spacing, np.float64).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"'spacing' must be 3 positive numbers, got {spacing}")
    return spacing.astype(np.float32)


def load_npz(path: str | Path, required: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The ``required`` arrays and those of ``optional`` present, read without pickles; a file
    that is not a complete npz or lacks a required key raises :class:`BadInputError`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise BadInputError(path, "unreadable npz: not a complete zip archive (truncated, or "
                                  "another format)")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = set(required) - set(f.files)
            if missing:
                raise BadInputError(path, f"missing keys {sorted(missing)} (has {sorted(f.files)})")
            return {k: f[k] for k in (*required, *optional) if k in f.files}
    except BadInputError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as e:
        raise BadInputError(path, f"unreadable npz ({type(e).__name__}: {e})") from e
