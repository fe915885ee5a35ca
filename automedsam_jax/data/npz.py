"""A challenge ``.npz`` file (read and checked by :mod:`automedsam_jax.io.npz`) as a
:class:`Volume` of a dataset's class ids. Every problem raises :class:`BadInputError` naming
the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.errors import BadInputError
from ..io.npz import load_npz, npz_image, npz_spacing
from .labels import class_volume
from .presets import DatasetConfig
from .volume import Volume


def read_npz(path: str | Path, config: DatasetConfig) -> Volume:
    """Read a challenge file as a :class:`Volume` of class ids (original frame), checking it fully.

    ``config.ndim`` says whether the file is 2D or 3D; labels are mapped with ``config.label_map``
    and, if ``config.split_kidney_by_midline``, the kidney is split at the body midline.
    """
    path = Path(path)
    arrays = load_npz(path, required=("imgs", "gts"), optional=("spacing",))
    imgs, gts, spacing = arrays["imgs"], arrays["gts"], arrays.get("spacing")
    try:
        image = npz_image(imgs, config.ndim)
        if gts.shape != (image.shape[:3] if config.ndim == 3 else image.shape[1:3]):
            raise ValueError(f"image shape {imgs.shape} and label shape {gts.shape} do not match")
        voxel = npz_spacing(spacing) if config.ndim == 3 else np.ones(3, np.float32)
        return class_volume(path.stem, image, gts.reshape(image.shape[:3]), voxel, config)
    except ValueError as e:
        raise BadInputError(path, str(e)) from e
