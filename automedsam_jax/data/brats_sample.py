"""A real brain-MR sample in the BraTS 2021 layout, made from what pip can fetch.

    python -m automedsam_jax.data.brats_sample runs/brats_sample
    python train.py --dataset brats --data-dir runs/brats_sample ...     # docs/data.md

``pyradiomics==3.0.1``'s sdist (pinned by SHA-256; pip needs ``--no-build-isolation`` to prepare
its metadata) ships two real brain MR volumes with a tumour label, ``data/brain{1,2}_image.nrrd``
and ``data/brain{1,2}_label.nrrd`` (256×256×25 and 256×256×23 voxels of 0.78×0.78×6.5 mm, one MR
sequence each, labels 0/1). They are written as BraTS 2021 cases ``BraTS2021_brain1`` and
``BraTS2021_brain2``: the one sequence under each of the four sequence names (``flair``, ``t1``,
``t1ce``, ``t2`` — copies, so every ``sequences`` option runs, not four sequences) and the
tumour as BraTS label 1, as NIfTI with the NRRD's geometry (LPS → the RAS affine NIfTI uses).
Two cases make a split of one training case and one test case (:func:`.splits.split_cases`):
a check of the layout and the commands, not a BraTS model.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np

from ..io.fetch import cache_dir, pip_download

PACKAGE = "pyradiomics"
VERSION = "3.0.1"
SDIST_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"
CASES = ("brain1", "brain2")
SEQUENCES = ("flair", "t1", "t1ce", "t2")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def fetch_nrrd_files(cache: Path | None = None) -> dict[str, Path]:
    """``{"brain1_image": path, "brain1_label": ..., ...}``: the four NRRD files, extracted from the
    sdist into the cache on first use."""
    root = (cache or cache_dir()) / f"{PACKAGE}-{VERSION}"
    paths = {f"{c}_{k}": root / f"{c}_{k}.nrrd" for c in CASES for k in ("image", "label")}
    if all(p.exists() for p in paths.values()):
        return paths
    sdist = pip_download(PACKAGE, VERSION, f"{PACKAGE}-{VERSION}.tar.gz", SDIST_SHA256, root,
                         build_isolation=False)
    with tarfile.open(sdist) as tar:
        for key, path in paths.items():
            data = tar.extractfile(f"{PACKAGE}-{VERSION}/data/{path.name}").read()
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
    sdist.unlink()
    return paths


def nrrd_to_nifti(path: Path, dtype: type) -> nib.Nifti1Image:
    """A 3-D NRRD in LPS space as a NIfTI image with the same voxels and geometry."""
    import nrrd  # pynrrd: only this sample reads NRRD

    data, header = nrrd.read(str(path))
    if header.get("space") != "left-posterior-superior":
        raise ValueError(f"{path}: expected an LPS NRRD, got space {header.get('space')!r}")
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], np.float64).T  # column i: axis i
    affine[:3, 3] = header["space origin"]
    image = nib.Nifti1Image(np.asarray(data, dtype), LPS_TO_RAS @ affine)
    image.header.set_xyzt_units("mm")
    return image


def write_brats_sample(dest: str | Path, cache: Path | None = None) -> list[Path]:
    """Write the two cases below ``dest`` in the BraTS 2021 layout; returns the case folders."""
    dest = Path(dest)
    nrrd_files = fetch_nrrd_files(cache)
    folders = []
    for case in CASES:
        case_id = f"BraTS2021_{case}"
        folder = dest / case_id
        folder.mkdir(parents=True, exist_ok=True)
        image = nrrd_to_nifti(nrrd_files[f"{case}_image"], np.int16)
        for sequence in SEQUENCES:
            nib.save(image, folder / f"{case_id}_{sequence}.nii.gz")
        nib.save(nrrd_to_nifti(nrrd_files[f"{case}_label"], np.uint8), folder / f"{case_id}_seg.nii.gz")
        folders.append(folder)
    return folders


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m automedsam_jax.data.brats_sample",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("dest", help="folder to write BraTS2021_brain1/ and BraTS2021_brain2/ into")
    args = p.parse_args(argv)
    for folder in write_brats_sample(args.dest):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
