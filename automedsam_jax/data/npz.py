"""A challenge ``.npz`` file (read and checked by :mod:`automedsam_jax.io.npz`) as a
:class:`Volume` of a dataset's class ids. Every problem raises :class:`BadInputError` naming
the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.errors import BadInputError
from ..io.npz import load_npz, npz_image, npz_labels, npz_spacing
from .labels import body_midline, split_by_midline, to_class_ids
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
        label = to_class_ids(npz_labels(gts), config).reshape(image.shape[:3])
        voxel = npz_spacing(spacing) if config.ndim == 3 else np.ones(3, np.float32)
        if config.split_kidney_by_midline:
            label = split_by_midline(label, body_midline(image), config.kidney_class,
                                     config.num_classes)
    except ValueError as e:
        raise BadInputError(path, str(e)) from e
    return Volume(path.stem, image, label, voxel)
