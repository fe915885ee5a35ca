"""The ``demo`` dataset: a real CT that needs nothing but pip.

TotalSegmentator's sdist (``totalsegmentator==2.18.0``, pinned by SHA-256) ships
``tests/reference_files/example_ct.nii.gz`` (122×101×112 voxels of 3 mm, int32 HU, one patient
from the pelvis to the lower thorax) with ``example_seg_fast_force_split.nii.gz`` (that tool's
``--fast`` model output on it, not a manual segmentation), and ``example_ct_sm.nii.gz`` — the top
30 slices of the same CT (z 82–111; its header claims the full CT's origin) — with
``example_seg.nii.gz``. We keep five organs (TotalSegmentator ids 5 liver, 1 spleen, 7 pancreas,
2 kidney_right, 3 kidney_left → demo ids 1..5, see :data:`presets.DEMO`) and window the CT at
40/400 HU. No other image of that sdist is used: they are kept for independent evaluation.

Orientation: the volume is reoriented to RAS with nibabel and stored as ``(z, y, x)`` arrays in
radiological display — row 0 anterior, column 0 the patient's right — like the challenge files;
z grows towards the head.

Split (:data:`BLOCKS`, z of ``example_ct``): one volume only, so the split is by slice position,
in contiguous z blocks; a held-out slice is never a training slice or a neighbour of one. The
organs span z 66–111. Validation and test each hold a block where all five organs show (the old
30-slice demo's validation and test blocks, z 87–91 and 93–97), a block at the lower poles of
liver and kidneys where spleen and pancreas are absent, and a pelvic block with none of the
five — so presence decisions can be measured. Training gets the rest of the organ range
(z 77–85, where spleen and pancreas begin, and 99–111) and a few organ-free slices below it (the
paper recipe uses only the slices with foreground). Every block is its own case, so evaluation
rebuilds each block as a small volume.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..io.fetch import cache_dir, extract_member, pip_download
from ..io.intensity import ct_window_to_uint8
from ..io.orientation import to_radiological
from .labels import to_class_ids
from .presets import DEMO
from .shifts import SHIFTS, case_rng, render_volume
from .volume import Volume

PACKAGE = "totalsegmentator"
VERSION = "2.18.0"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
_REF = f"{PACKAGE}-{VERSION}/tests/reference_files/"
MEMBERS = {"image": _REF + "example_ct_sm.nii.gz", "label": _REF + "example_seg.nii.gz",
           "full_image": _REF + "example_ct.nii.gz",
           "full_label": _REF + "example_seg_fast_force_split.nii.gz"}
SM_OFFSET = 82
"""``example_ct_sm`` is ``example_ct[..., 82:112]`` (checked in tests/test_data_demo.py)."""

# z ranges (start, stop) of the demo split blocks in example_ct; every held-out block has an
# unused slice (or another held-out block) on each side.
BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((16, 19), (26, 29), (58, 64), (77, 86), (99, 112)),
    "validation": ((30, 35), (65, 70), (87, 92)),
    "test": ((20, 25), (70, 76), (93, 98)),
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


def demo_volume(cache: Path | None = None, full: bool = False) -> Volume:
    """The small demo CT (``example_ct_sm``, 30 slices) or, ``full``, the whole ``example_ct``
    (112 slices) as one :class:`Volume` (windowed uint8, demo class ids 1..5)."""
    paths = fetch_demo_files(cache)
    image, label = ("full_image", "full_label") if full else ("image", "label")
    hu, spacing = _radiological(paths[image])
    ids = to_class_ids(_radiological(paths[label])[0], DEMO)
    return Volume(Path(MEMBERS[image]).name.removesuffix(".nii.gz"),
                  ct_window_to_uint8(hu)[..., None], ids, spacing)


def demo_cases(split: str, cache: Path | None = None, shifts: tuple[str, ...] = ("none",),
               seed: int = 0) -> list[Volume]:
    """The z blocks of ``split`` (``train``/``validation``/``test``) of ``example_ct``, each a
    :class:`Volume`, once per name of ``shifts``: ``none`` the block as it is, any other
    (:data:`.shifts.SHIFTS`) the block rendered as another scanner and patient would present
    it (:func:`.shifts.render_volume`, drawn per case from ``seed``), case id
    ``<block>_<shift>``. Training blocks are never shifted."""
    paths = fetch_demo_files(cache)
    hu, spacing = _radiological(paths["full_image"])
    seg = _radiological(paths["full_label"])[0]
    name = Path(MEMBERS["full_image"]).name.removesuffix(".nii.gz")
    cases = []
    for shift in shifts if split != "train" else ("none",):
        for start, stop in BLOCKS[split]:
            block = f"{name}_z{start:03d}-{stop - 1:03d}"
            if shift == "none":
                h, s, sp = hu[start:stop], seg[start:stop], spacing
            else:
                h, s, sp = render_volume(hu[start:stop], seg[start:stop], spacing,
                                         SHIFTS[shift], case_rng(seed, block, shift))
                block = f"{block}_{shift}"
            cases.append(Volume(block, ct_window_to_uint8(h)[..., None], to_class_ids(s, DEMO),
                                np.asarray(sp, np.float32)))
    return cases
