"""Segment new images with a trained AutoMedSAM — no prompt but the class names.

    python -m automedsam_jax.predict scan.nii.gz --checkpoint runs/demo --overlays
    python -m automedsam_jax.predict slice.png --classes liver,spleen --out liver_spleen.png
    python -m automedsam_jax.predict BraTS2021_00000/ --checkpoint runs/brats --out submission/
    python -m automedsam_jax.predict ValidationData/ --checkpoint runs/brats --out submission/

INPUT is a PNG/JPEG, a challenge-style npz or a NIfTI volume (read and written by
:mod:`automedsam_jax.io.scans`: axial slices in the orientation training used, CT windowed at
40/400 HU). Every slice is embedded once and the requested classes (default: all the model
knows) are decoded against that embedding, ``--batch-size`` slices per model call; a pixel gets
the most probable class above 0.5 (:class:`automedsam_jax.inference.Segmenter`, through the route the model was trained with), and a
class is drawn on a slice only where the model's calibrated presence rule finds it there
(:mod:`automedsam_jax.evaluation.presence`; models trained with ``--recipe paper`` have none and
draw every class everywhere). The summary says on how many slices each class was found. Writes
the label map in the input's format (NIfTI: the input's voxel grid, affine and header;
``--postprocess 3d`` first keeps, per class, presence smoothed along z and the largest 3-D
component, :mod:`automedsam_jax.inference.postprocess_3d`), a sidecar
JSON naming every label value, and with ``--overlays`` PNGs of the slices that hold a prediction
(every slice of a 2D input) with a legend of class names, in ``<out name>_overlays/``.

A folder INPUT is a BraTS case (its sequence files, named as the 2020/2021/2023/2024 releases
name them, ``.nii`` or ``.nii.gz``) or a folder of many (a validation release): a model trained
on a ``brats`` dataset reads the sequences it was trained on from each case
(:func:`automedsam_jax.data.originals.read_brats_sequences`) and writes ``OUT/<case id>.nii.gz``
— uint8, the case's voxel grid, affine and header, the release's label values
(:func:`automedsam_jax.data.originals.brats_release_labels`) — the files a team uploads; one
progress bar, a bad case named and skipped.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import simple_parsing as sp
from tqdm import tqdm

from .core.preprocess import model_input
from .inference import Segmenter, postprocess_case, segment_slices
from .inference.options import InferenceConfig
from .io.checkpoint import read_meta
from .io.cli import ArgumentParser, configure_logging
from .io.compilation_cache import CompilationCacheConfig
from .io.errors import BadInputError, UsageError
from .io.paths import local_dir
from .io.rundir import CLASS_NAMES, DEFAULT_WORKDIR, TrainedModel, load_automedsam, model_dir
from .io.scans import Scan, output_path, read_scan, sidecar_path, write_labels, write_nifti_labels
from .overlay import render_overlay

if TYPE_CHECKING:
    from .data.presets import DatasetConfig


def class_ids(text: str | None, class_names: Sequence[str]) -> list[int]:
    """``--classes``: comma-separated class names (or ids) → ids; None → every class."""
    if text is None:
        return list(range(1, len(class_names) + 1))
    ids = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if item in class_names:
            ids.append(class_names.index(item) + 1)
        elif item.isdigit() and 1 <= int(item) <= len(class_names):
            ids.append(int(item))
        else:
            raise UsageError(f"--classes: unknown class {item!r}; this model knows "
                             + ", ".join(f"{i} {n}" for i, n in enumerate(class_names, start=1))
                             + " (give their names or ids, or leave --classes out for all)")
    if not ids:
        raise UsageError(f"--classes {text!r} names no class: give class names separated by "
                         "commas (e.g. liver,spleen), or leave --classes out for every class")
    return sorted(set(ids))


def segment_scan(segmenter: Segmenter, scan: Scan) -> np.ndarray:
    """``(D, H, W)`` uint8 class ids for every slice of ``scan`` (original frame)."""
    spacing = tuple(scan.spacing[1:]) if scan.volume and scan.spacing else None
    records = (model_input(pixels, segmenter.frame, spacing) for pixels in scan.slices)
    return np.stack([labels for _, labels, _ in segment_slices(segmenter, records)])


def write_overlays(scan: Scan, labels: np.ndarray, legend: dict[int, str], directory: Path
                   ) -> list[Path]:
    """Overlay PNGs: ``slice_ZZZ.png`` for each slice of a volume holding a prediction (z in the
    radiological slice order), ``overlay.png`` for a 2D image."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for z in range(labels.shape[0]):
        if scan.volume and not labels[z].any():
            continue
        path = directory / (f"slice_{z:03d}.png" if scan.volume else "overlay.png")
        render_overlay(scan.slices[z], labels[z], legend).save(path)
        paths.append(path)
    return paths


LOCAL_OUTPUT = ("predictions are written by nibabel, Pillow and NumPy, to local disk only (the "
                "--checkpoint may be a gs:// URL)")
"""Why ``--out`` is local."""


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """What to segment, with which model, and what to write."""

    input: Path = sp.field(positional=True, metavar="INPUT")
    """a .png/.jpg image, a challenge .npz, a .nii/.nii.gz volume, or a BraTS case folder or
    release (folder of cases: writes OUT/<case id>.nii.gz)"""
    checkpoint: str = DEFAULT_WORKDIR
    """training work directory or AutoMedSAM model directory"""
    classes: str | None = None
    """comma-separated class names (or ids) the model knows, e.g. liver,spleen (default: all)"""
    out: str | None = None
    """label map file, or a directory for <input>_seg.<ext> (default runs/predict/); a folder
    INPUT: the directory of <case id>.nii.gz (default runs/predict/<INPUT name>). Local disk
    only (the checkpoint may be a gs:// URL)"""
    overlays: bool = False
    """also write overlay PNGs with a class legend"""
    intensity: Literal["auto", "ct", "mr", "none"] = "auto"
    """intensity step before the model (auto: CT window for NIfTI in HU, MR percentiles for
    other NIfTI, none for PNG/JPEG/npz)"""
    inference: InferenceConfig = InferenceConfig()
    xla: CompilationCacheConfig = CompilationCacheConfig()

    def __post_init__(self):
        if self.classes is not None and not any(s.strip() for s in self.classes.split(",")):
            raise ValueError(f"--classes {self.classes!r} names no class: give class names "
                             "separated by commas (e.g. liver,spleen), or leave --classes out "
                             "for every class")


def parser() -> ArgumentParser:
    """The command line of :class:`PredictConfig`."""
    p = ArgumentParser("-m automedsam_jax.predict",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_arguments(PredictConfig, dest="cfg")
    return p


def parse_args(argv: list[str] | None = None) -> PredictConfig:
    """The prediction's config; :class:`UsageError` for an unusable option (a field's check
    included)."""
    return parser().parse_args(argv).cfg


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        args = parse_args(argv)
        if args.out is not None:
            args = dataclasses.replace(args, out=local_dir(args.out, "--out", LOCAL_OUTPUT))
        args.xla.apply()
        # The cheap checks first: the checkpoint, the class names it records, the input file;
        # the model is loaded only for an input it can segment.
        names = read_meta(model_dir(args.checkpoint)).get(CLASS_NAMES)
        if names:
            class_ids(args.classes, names)
        if args.input.is_dir():
            return predict_cases(args)
        out = output_path(args.input, args.out)
        scan = read_scan(args.input, args.intensity)
        trained = load_automedsam(args.checkpoint)
        ids = class_ids(args.classes, trained.class_names)
    except (FileNotFoundError, BadInputError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = trained.class_names
    segmenter = Segmenter(trained.model, ids, args.inference.batch_size, trained.min_area)
    labels = segment_scan(segmenter, scan)
    if args.inference.postprocess == "3d":
        labels = postprocess_case(labels if scan.volume else labels[0], ids)
        labels = labels if scan.volume else labels[None]
    written = write_labels(scan, labels, out, names, {
        "checkpoint": str(trained.directory), "classes": [names[i - 1] for i in ids]})
    print(f"{scan.path}: {len(scan.slices)} slice(s) of {scan.slices.shape[1:3]}, intensity "
          f"{scan.intensity}; {trained.model.config.sam.name} AutoMedSAM from {trained.directory}")
    voxel_ml = np.prod(scan.spacing) / 1000 if scan.spacing else None
    for i in ids:
        count = int((labels == i).sum())
        size = f"{count * voxel_ml:.1f} ml" if voxel_ml else f"{count} px"
        print(f"  {names[i - 1]:<16} {size:>12}  on {int((labels == i).any(axis=(1, 2)).sum())} "
              f"of {len(labels)} slice(s)")
    print("wrote " + ", ".join(str(x) for x in written))
    if args.overlays:
        directory = out.with_name(sidecar_path(out).stem + "_overlays")
        shown = write_overlays(scan, labels, {i: names[i - 1] for i in ids}, directory)
        print(f"overlays: {len(shown)} PNG(s) in {directory}" if shown else
              "overlays: no slice holds a prediction, none written")
    return 0


def brats_dataset(trained: TrainedModel) -> "DatasetConfig":
    """The BraTS dataset a model was trained on (its sequences, classes and regions);
    :class:`UsageError` for a model of another dataset."""
    from .data.presets import brats, preset_options

    name = trained.data("dataset") or ""
    base, options = preset_options(name)
    if base != "brats":
        raise UsageError(f"a folder input is a BraTS case or release: {trained.directory} was "
                         f"trained on {name or 'an unrecorded dataset'!r}, not a brats dataset; "
                         "give one image or volume file instead")
    return brats(**options)


def predict_cases(args: PredictConfig) -> int:
    """A BraTS case folder or release → ``OUT/<case id>.nii.gz`` each (module docstring); 0
    when every case was written, 2 when none could be (each bad case is named). The data layer
    (and with it tensorflow-datasets and grain) is imported here only: a file input never
    loads it."""
    from .data.originals import brats_case_folders, brats_release_labels, read_brats_sequences

    if args.overlays:
        raise UsageError("--overlays takes one image or volume file, not a folder of cases")
    cases = brats_case_folders(args.input)
    if not cases:
        raise BadInputError(args.input, "holds no BraTS case (files named as a release names "
                                        "them, e.g. BraTS2021_00000_flair.nii.gz or "
                                        "BraTS-GLI-00000-000-t2f.nii.gz)")
    trained = load_automedsam(args.checkpoint)
    dataset = brats_dataset(trained)
    ids = class_ids(args.classes, trained.class_names)
    segmenter = Segmenter(trained.model, ids, args.inference.batch_size, trained.min_area)
    out = args.out or Path("runs/predict") / args.input.resolve().name
    written, bad = [], []
    for case_id, folder in tqdm(cases.items(), unit="case", file=sys.stderr):
        try:
            nifti, channels, spacing = read_brats_sequences(folder, case_id, dataset)
        except BadInputError as e:
            tqdm.write(f"skipping case {case_id}: {e}", file=sys.stderr)
            bad.append(case_id)
            continue
        scan = Scan(folder, "nifti", channels if channels.shape[-1] == 3 else channels[..., 0],
                    True, tuple(float(s) for s in spacing), "mr", nifti)
        labels = segment_scan(segmenter, scan)
        if args.inference.postprocess == "3d":
            labels = postprocess_case(labels, ids)
        path = out / f"{case_id}.nii.gz"
        write_nifti_labels(brats_release_labels(labels, dataset, case_id), nifti, path)
        written.append(path)
    print(f"{args.input}: {len(written)} of {len(cases)} case(s) written to {out} "
          f"({dataset.name}: {' + '.join(dataset.sequences)}; {trained.model.config.sam.name} "
          f"AutoMedSAM from {trained.directory})" + (f"; skipped: {', '.join(bad)}" if bad else ""))
    return 0 if written else 2


if __name__ == "__main__":
    sys.exit(main())
