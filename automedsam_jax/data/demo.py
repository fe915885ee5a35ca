"""The ``demo`` dataset: a real abdominal CT that needs nothing but pip.

TotalSegmentator's sdist (``totalsegmentator==2.18.0``, pinned by SHA-256) ships
``tests/reference_files/example_ct_sm.nii.gz`` (122×101×30 voxels of 3 mm, int16 HU) and
``example_seg.nii.gz`` (that tool's model output, not a manual segmentation). We keep five organs
(TotalSegmentator ids 5 liver, 1 spleen, 7 pancreas, 2 kidney_right, 3 kidney_left → demo ids 1..5,
see :data:`presets.DEMO`) and window the CT at 40/400 HU.

Orientation: the volume is reoriented to RAS with nibabel and stored as ``(z, y, x)`` arrays in
radiological display — row 0 anterior, column 0 the patient's right — like the challenge files.

Split: one volume only, so the split is by slice position, in contiguous z blocks separated by a
one-slice gap (validation/test slices are never neighbours of training slices); every block is
its own case, so evaluation rebuilds each block as a small volume.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..fetch import cache_dir, extract_member, pip_download
from .intensity import ct_window_to_uint8
from .labels import to_class_ids
from .orientation import to_radiological
from .presets import DEMO
from .volume import Volume

PACKAGE = "totalsegmentator"
VERSION = "2.18.0"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
MEMBERS = {"image": f"{PACKAGE}-{VERSION}/tests/reference_files/example_ct_sm.nii.gz",
           "label": f"{PACKAGE}-{VERSION}/tests/reference_files/example_seg.nii.gz"}

# z ranges (start, stop) of the demo split blocks; z 4, 10 and 16 are the gaps.
BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((0, 4), (17, 30)),
    "validation": ((5, 10),),
    "test": ((11, 16),),
}


def fetch_demo_files(cache: Path | None = None) -> dict[str, Path]:
    """The demo's two NIfTI files (``{"image": ..., "label": ...}``), downloading and extracting
    them into the cache on first use."""
    root = (cache or cache_dir()) / f"{PACKAGE}-{VERSION}"
    paths = {key: root / Path(member).name for key, member in MEMBERS.items()}
    if all(p.exists() for p in paths.values()):
        return paths
    sdist = pip_download(PACKAGE, VERSION, f"{PACKAGE}-{VERSION}.tar.gz", SDIST_SHA256, root)
    for key, member in MEMBERS.items():
        extract_member(sdist, member, paths[key])
    sdist.unlink()
    return paths


def _radiological(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI → ``(z, y, x)`` array with row 0 anterior and column 0 the patient's right, and its
    voxel spacing (z, y, x) in mm (:func:`.orientation.to_radiological`)."""
    return to_radiological(nib.load(path))


def demo_volume(cache: Path | None = None) -> Volume:
    """The whole demo CT as one :class:`Volume` (windowed uint8, demo class ids 1..5)."""
    paths = fetch_demo_files(cache)
    hu, spacing = _radiological(paths["image"])
    label = to_class_ids(_radiological(paths["label"])[0], DEMO)
    return Volume("example_ct_sm", ct_window_to_uint8(hu)[..., None], label, spacing)


def demo_cases(split: str, cache: Path | None = None) -> list[Volume]:
    """The z blocks of ``split`` (``train``/``validation``/``test``), each a :class:`Volume`."""
    volume = demo_volume(cache)
    return [Volume(f"{volume.case_id}_z{start:02d}-{stop - 1:02d}", volume.image[start:stop],
                   volume.label[start:stop], volume.spacing) for start, stop in BLOCKS[split]]
