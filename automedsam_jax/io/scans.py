"""Reading images and volumes for inference, and writing label maps back in the input's format.

Inputs (:func:`read_scan`):

* ``.png`` / ``.jpg`` / ``.jpeg`` — one 2D image; greyscale (8/16-bit) or RGB (alpha and
  palettes are converted to RGB).
* ``.npz`` — the challenge format: ``imgs`` ``(H, W)``/``(H, W, 3)`` (2D) or ``(D, H, W)`` (3D),
  ``spacing`` optional. Arrays follow the one image rule of
  :func:`automedsam_jax.core.preprocess.as_slices` (a 4-channel image is refused, by name).
* ``.nii`` / ``.nii.gz`` — a 3D volume (a 4D one with one volume is accepted), read with nibabel
  and brought to the radiological ``(z, y, x)`` layout training used
  (:func:`automedsam_jax.io.orientation.to_radiological`): axial slices, row 0 anterior,
  column 0 the patient's right.

Intensities: ``ct`` windows at 40/400 HU and ``mr`` clips to the 0.5–99.5 percentiles of the
non-zero voxels, both to uint8 (:mod:`automedsam_jax.io.intensity`, what the datasets were
built with); ``none`` keeps the stored pixels (challenge npz files and PNGs are uint8 already).
``auto`` (default) is ``ct`` for a NIfTI volume whose minimum is ≤ −500 (air in Hounsfield
units), ``mr`` for any other NIfTI, ``none`` for the rest. Each slice then gets the model's own
preprocessing (:func:`automedsam_jax.core.preprocess.preprocess_image`).

Outputs (:func:`write_labels`): the label map — uint8 class ids, 0 background — in the input's
format: a NIfTI in the input's voxel order with its affine and header (intent ``label``, the
class names in ``descrip`` as far as 80 bytes go); a PNG (grey values are class ids; JPEG inputs
get a PNG, JPEG is lossy); an npz with ``segs`` (the challenge's key, ``(H, W)`` or ``(D, H, W)``)
and ``class_names`` (index = label value, ``class_names[0] == "background"``). Every format also
gets a sidecar ``<out>.json`` mapping label values to class names.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from PIL import Image, UnidentifiedImageError

from ..core.preprocess import as_slices
from .errors import BadInputError
from .intensity import ct_window_to_uint8, mr_percentile_to_uint8
from .npz import empty_problem, load_npz, npz_ndim
from .orientation import from_radiological, to_radiological

Kind = Literal["image", "npz", "nifti"]
Intensity = Literal["auto", "ct", "mr", "none"]
SUFFIXES: dict[str, Kind] = {".png": "image", ".jpg": "image", ".jpeg": "image", ".npz": "npz",
                             ".nii": "nifti", ".nii.gz": "nifti"}
HU_AIR_BELOW = -500


def suffix(path: str | Path) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower case."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def input_kind(path: str | Path) -> Kind:
    """``image``, ``npz`` or ``nifti`` from the file name; BadInputError for anything else."""
    kind = SUFFIXES.get(suffix(path))
    if kind is None:
        raise BadInputError(path, f"unsupported input type {suffix(path) or '(no extension)'!r}; "
                                  f"expected one of {', '.join(SUFFIXES)}")
    return kind


@dataclasses.dataclass(frozen=True)
class Scan:
    """An input ready for the model.

    slices:    ``(D, H, W)`` or ``(D, H, W, 3)`` — each slice as the model gets it (after the
               intensity step), original frame; a 2D image has D = 1.
    volume:    True for 3D inputs (NIfTI, 3D npz): the output keeps the D axis.
    spacing:   (z, y, x) mm where the file says, else None.
    intensity: the intensity step applied (``ct``, ``mr`` or ``none``).
    nifti:     the nibabel image, for writing a NIfTI back in its voxel order.
    """

    path: Path
    kind: Kind
    slices: np.ndarray
    volume: bool
    spacing: tuple[float, float, float] | None
    intensity: str
    nifti: nib.Nifti1Image | None = None


def read_scan(path: str | Path, intensity: Intensity = "auto") -> Scan:
    """Read an image, npz or NIfTI file (see the module docstring)."""
    path = Path(path)
    kind = input_kind(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    if kind == "image":
        pixels = read_image(path)
        try:
            pixels = as_slices(pixels, 2)
        except ValueError as e:
            raise BadInputError(path, str(e)) from e
        volume, spacing, nifti = False, None, None
    elif kind == "npz":
        pixels, volume, spacing = _read_npz(path)
        nifti = None
    else:
        nifti, pixels, spacing = read_nifti_volume(path)
        volume, spacing = True, tuple(float(s) for s in spacing)
    if pixels.size == 0:
        raise BadInputError(path, empty_problem(pixels.shape if volume else pixels.shape[1:],
                                                "'imgs'" if kind == "npz" else "it"))
    if not np.all(np.isfinite(pixels)):
        raise BadInputError(path, "contains NaN or Inf values")
    if intensity == "auto":
        intensity = ("ct" if pixels.min() <= HU_AIR_BELOW else "mr") if kind == "nifti" else "none"
    if intensity == "ct":
        pixels = ct_window_to_uint8(pixels)
    elif intensity == "mr":
        pixels = mr_percentile_to_uint8(pixels)
    elif intensity != "none":
        raise ValueError(f"unknown intensity {intensity!r}; choose auto, ct, mr or none")
    return Scan(path, kind, pixels, volume, spacing, intensity, nifti)


CORRUPT_HINT = "re-export or copy the file again"


def _reason(e: BaseException, path: Path) -> str:
    """A reader's exception as ``Type: message``, the file's own name left out (the error names
    it already)."""
    name = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
    text = str(e).replace(f"File {path} ", "this file ")
    for quoted in (f'"{path}"', f"'{path}'", str(path)):
        text = text.replace(quoted, "this file")
    return f"{name}: {text}"


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG/... decoded to grey (16-bit and float modes as float32) or RGB: palette and
    alpha modes are converted (alpha dropped) — the one conversion of the readers. A file
    Pillow cannot identify or decode (truncated, corrupt) is a :class:`BadInputError`."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return np.asarray(im, np.float32)
            if im.mode not in ("L", "RGB"):
                im = im.convert("L" if im.mode in ("1", "LA") else "RGB")
            return np.asarray(im)
    except UnidentifiedImageError as e:
        raise BadInputError(path, f"not a readable {suffix(path)} image (Pillow cannot identify "
                                  f"it): {CORRUPT_HINT}") from e
    except (OSError, SyntaxError, EOFError, zlib.error) as e:  # truncated / corrupt data
        raise BadInputError(path, f"corrupt {suffix(path)} image ({_reason(e, path)}): "
                                  f"{CORRUPT_HINT}") from e


def _read_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The nibabel image and its voxel array; a file nibabel cannot read (not NIfTI, a broken or
    truncated gzip stream, a bad header) is a :class:`BadInputError`."""
    try:
        nifti = nib.load(path)
        return nifti, np.asanyarray(nifti.dataobj)
    except (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, ValueError) as e:
        raise BadInputError(path, f"not a readable NIfTI volume ({_reason(e, path)}): "
                                  f"{CORRUPT_HINT}") from e


def read_nifti_volume(path: Path) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """A 3D NIfTI volume (a 4D one holding one volume is accepted): the nibabel image, its
    voxels as the radiological ``(z, y, x)`` array training uses
    (:func:`.orientation.to_radiological`) and the spacing (z, y, x) in mm. An unreadable,
    empty or not-3D file is a :class:`BadInputError`."""
    nifti, data = _read_nifti(path)
    if 0 in nifti.shape:  # nibabel reads such a volume as a (0,) array
        raise BadInputError(path, f"a NIfTI volume with no voxels (shape {nifti.shape}): "
                                  "nothing to segment; export the scan again with its slices")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadInputError(path, f"expected a 3D volume, got shape {data.shape}")
    pixels, spacing = to_radiological(nifti, data)
    return nifti, pixels, spacing


def _read_npz(path: Path) -> tuple[np.ndarray, bool, tuple[float, float, float] | None]:
    """The slices of a challenge npz: a volume when it carries ``spacing`` (the challenge's 3D
    files do) or its array is one (:func:`automedsam_jax.core.preprocess.image_ndim`)."""
    arrays = load_npz(path, required=("imgs",), optional=("spacing",))
    imgs, spacing = arrays["imgs"], arrays.get("spacing")
    ndim = npz_ndim(arrays)
    try:
        slices = as_slices(imgs, ndim)
    except ValueError as e:
        raise BadInputError(path, f"'imgs': {e}") from e
    if spacing is not None:
        spacing = tuple(float(s) for s in np.ravel(spacing))
    return slices, ndim == 3, spacing


def output_path(scan_path: str | Path, out: str | Path | None) -> Path:
    """Where the label map goes: ``out`` if it names a file of the input's format; inside ``out``
    (or ``runs/predict``) as ``<input name>_seg<suffix>`` if it is a directory or has no suffix.
    JPEG inputs give PNG label maps."""
    ext = suffix(scan_path)
    ext = ".png" if ext in (".jpg", ".jpeg") else ext
    out = Path(out) if out is not None else Path("runs/predict")
    if out.is_dir() or not suffix(out):
        stem = Path(scan_path).name[:-len(suffix(scan_path))]
        return out / f"{stem}_seg{ext}"
    if suffix(out) != ext and not (ext == ".nii.gz" and suffix(out) == ".nii") and not (
            ext == ".nii" and suffix(out) == ".nii.gz"):
        raise BadInputError(out, f"a {suffix(scan_path)} input gives a {ext} label map; name "
                                 f"the output accordingly")
    return out


def sidecar_path(out: Path) -> Path:
    """``labels.nii.gz`` → ``labels.json``."""
    return out.with_name(out.name[:-len(suffix(out))] + ".json")


def write_nifti_labels(labels: np.ndarray, like: nib.Nifti1Image, out: Path,
                       description: str = "") -> Path:
    """``labels`` (``(D, H, W)`` uint8, radiological) as the NIfTI ``out`` on the voxel grid of
    ``like``: its voxel order, affine and header, uint8 with no scaling, intent ``label``,
    ``description`` in ``descrip`` (80 bytes at most)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    data = from_radiological(np.asarray(labels, np.uint8), like)
    img = nib.Nifti1Image(data, like.affine, like.header.copy())
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1, 0)
    img.header.set_intent("label", name="AutoMedSAM")
    img.header["descrip"] = description[:79]
    nib.save(img, out)
    return out


def write_labels(scan: Scan, labels: np.ndarray, out: Path, class_names: Sequence[str],
                 info: dict | None = None) -> list[Path]:
    """Write ``labels`` (``(D, H, W)`` uint8 class ids, radiological for NIfTI) as ``out`` in the
    scan's format plus the sidecar JSON; ``class_names[i]`` names label value ``i + 1``.
    Returns the written paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, np.uint8)
    names = ["background", *class_names]
    if scan.kind == "nifti":
        write_nifti_labels(labels, scan.nifti, out,
                           " ".join(f"{i}={n}" for i, n in enumerate(names) if i))
    elif scan.kind == "npz":
        np.savez_compressed(out, segs=labels if scan.volume else labels[0],
                            class_names=np.array(names))
    else:
        Image.fromarray(labels[0]).save(out)
    sidecar = sidecar_path(out)
    sidecar.write_text(json.dumps({"labels": {str(i): n for i, n in enumerate(names)},
                                   "input": str(scan.path), "intensity": scan.intensity,
                                   **(info or {})}, indent=2) + "\n")
    return [out, sidecar]
