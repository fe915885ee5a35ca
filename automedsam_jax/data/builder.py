"""The tfds builder that cuts every source into 2D slices, stored as array_record.

One builder, ``automedsam_slices``, with one config per dataset preset (``brats``, ``abdomenct1k``,
``abdomenct1k_split_kidney``, ``kvasir``, ``chestxml``, ``demo``) plus any synthetic, user or
``brats:...`` config. The files presets read their challenge ``.npz`` files or their original
layout (:func:`find_cases`, :mod:`.originals`). Every
record is one slice at its original resolution (so one built dataset serves the 1024 and the 256
frames; the frame-specific preprocessing happens in the grain pipeline):

``image``       ``(H, W, C)`` uint8, original frame, ``C`` = 1 (grey) or 3 (RGB)
``label``       ``(H, W)`` uint8 class ids ``0..K``, original frame
``case_id``     the case (npz file stem, the original release's case name, or the demo z block);
                bytes when read back
``slice_index`` the slice's z index within its case (0 for 2D images)
``depth``       number of slices of the case's volume (1 for 2D images)
``spacing``     ``(3,)`` float32 (z, y, x) in mm; (1, 1, 1) for 2D images

The ``train`` split holds only slices with foreground (unless the dataset keeps organ-free
training slices, ``DatasetConfig.train_empty_slices``, recorded in the metadata); a preset's
training labels lose the small objects MedSAM's preprocessing removes
(:func:`.labels.remove_small_objects`), while ``validation`` and ``test`` keep the labels as
released, so scores compare with the challenges' (BraTS's WT / TC / ET); ``validation``
and ``test`` hold every slice, in case order and z order (``disable_shuffling``), so evaluation can rebuild volumes. The case
lists of each split, the class names and every skipped file (with its problem) are stored in the
dataset's metadata (``builder.info.metadata``). Only Tensor/Text/Scalar features are used, so
neither building nor reading imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from ..io.errors import BadInputError, UsageError
from .custom import dataset_config, matching_files, parse_dataset_json, read_dataset_file
from .demo import demo_cases
from .labels import remove_small_objects
from .npz import read_npz
from .originals import LAYOUT_HELP, Reader, find_layout
from .presets import PRESETS, DatasetConfig, brats, demo, get_preset, preset_options
from .splits import SPLITS, split_cases
from .synthetic import SyntheticConfig, synthetic_case
from .volume import Volume

log = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The challenge presets read either the dataset as its owners publish it, found below the folder
(automedsam_jax/data/originals.py), or the CVPR 2024 "MedSAM on Laptop" challenge's .npz files
(https://www.codabench.org/competitions/1847/; one .npz per case with `imgs`, `gts` and, 3D,
`spacing`) directly in it. The folder is --manual-dir, or without it <data-dir>/downloads/manual
and then <data-dir> itself:
""" + "".join(f"  {c.name}: {LAYOUT_HELP[c.layout]}, or {c.file_glob}\n"
              for c in PRESETS.values() if c.layout)


@dataclasses.dataclass(eq=False)
class SlicesConfig(tfds.core.BuilderConfig):
    """A tfds config wrapping a :class:`DatasetConfig` (and the sizes of a synthetic one)."""

    dataset: DatasetConfig | None = None
    synthetic: SyntheticConfig | None = None


def slices_config(dataset: str | DatasetConfig | SyntheticConfig) -> SlicesConfig:
    """The builder config of a preset name, a :class:`DatasetConfig` or a :class:`SyntheticConfig`."""
    if isinstance(dataset, SyntheticConfig):
        return SlicesConfig(name=dataset.name, dataset=dataset.dataset(), synthetic=dataset,
                            description="synthetic organ-like structures")
    if isinstance(dataset, str):
        dataset = get_preset(dataset)
    return SlicesConfig(name=dataset.name, dataset=dataset, description=", ".join(dataset.class_names))


class AutomedsamSlices(tfds.core.GeneratorBasedBuilder):
    """2D slices with class-id labels for AutoMedSAM training and evaluation (see module doc)."""

    VERSION = tfds.core.Version("2.3.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "2.0.0": "demo: the whole example_ct (112 slices) with held-out blocks "
                              "without organs; optional organ-free training slices.",
                     "2.1.0": "the presets read their datasets' original layouts too; brats and "
                              "abdomenct1k keep their organ-free training slices.",
                     "2.2.0": "demo: the held-out blocks also as another scanner shows them "
                              "(data/shifts.py); demo:shift=... options.",
                     "2.3.0": "the presets' training labels without MedSAM's small objects; "
                              "BraTS 2020 and 2024, .nii, Montgomery masks, masks in another "
                              "tree."}
    BUILDER_CONFIGS = [slices_config(name) for name in PRESETS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

    def __init__(self, *, strict: bool = False, cases: dict[str, Reader] | None = None,
                 **kwargs):
        """``strict=True`` makes any bad input file fatal; otherwise bad files are skipped, logged
        and listed in ``info.metadata["skipped_files"]``. ``cases``: a files dataset's cases as
        :func:`find_cases` found them (default: found in tfds's manual directory)."""
        kwargs.setdefault("file_format", "array_record")
        self._strict = strict
        self._cases = cases
        super().__init__(**kwargs)

    def as_data_source(self, split, *args, **kwargs):
        """tfds's data source of ``split``; a split no case went to (a dataset of one or two
        cases has no validation split, :func:`.splits.split_cases`) reads as an empty list."""
        if split in SPLITS and split not in self.info.splits:
            return []
        return super().as_data_source(split, *args, **kwargs)

    @property
    def dataset(self) -> DatasetConfig:
        return self.builder_config.dataset

    def _info(self) -> tfds.core.DatasetInfo:
        ds = self.dataset
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{ds.name}: {ds.modality} {ds.ndim}D slices, classes {list(ds.class_names)}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                                              encoding="zlib"),
                "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
                "case_id": tfds.features.Text(),
                "slice_index": tfds.features.Scalar(dtype=np.int32),
                "depth": tfds.features.Scalar(dtype=np.int32),
                "spacing": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            }),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                class_names=list(ds.class_names), modality=ds.modality, ndim=ds.ndim,
                train_empty_slices=ds.train_empty_slices),
        )

    # -- where the volumes come from ------------------------------------------------------------
    def _split_generators(self, dl_manager):
        ds = self.dataset
        skipped: dict[str, str] = {}
        self.info.metadata["skipped_files"] = skipped
        if ds.source == "demo":
            cases = {split: demo_cases(split, shifts=ds.shifts, seed=ds.shift_seed)
                     for split in SPLITS}
            volumes = {split: iter(cases[split]) for split in SPLITS}
            assignment = {split: [v.case_id for v in cases[split]] for split in SPLITS}
        elif ds.source == "synthetic":
            syn = self.builder_config.synthetic
            by_id = {f"synthetic_{i:04d}": i for i in range(syn.num_cases)}
            assignment = split_cases(by_id, ds.split_fractions)
            volumes = {split: (synthetic_case(syn, by_id[c]) for c in assignment[split])
                       for split in SPLITS}
        else:
            readers = (self._cases if self._cases is not None
                       else find_cases(ds, [Path(dl_manager.manual_dir)])[1])
            assignment = split_cases(readers, ds.split_fractions)
            volumes = {split: self._read_cases([readers[c] for c in assignment[split]], skipped)
                       for split in SPLITS}
        self.info.metadata["splits"] = assignment
        return {split: self._generate_examples(volumes[split], split, skipped)
                for split in SPLITS if assignment[split]}

    def _read_cases(self, readers: list[Reader], skipped: dict[str, str]) -> Iterator[Volume]:
        for read in readers:
            try:
                yield read()
            except BadInputError as e:
                if self._strict:
                    raise
                log.warning("skipping bad input file %s", e)
                skipped[e.path] = e.problem

    # -- volumes → slice records ---------------------------------------------------------------
    def _generate_examples(self, volumes: Iterator[Volume], split: str, skipped: dict[str, str]):
        num_slices = num_cases = 0
        earlier = set(skipped)  # the splits are generated one after the other
        for volume in volumes:
            num_cases += 1
            depth = volume.image.shape[0]
            if split == "train" and self.dataset.layout:  # as the challenge files were made
                volume = dataclasses.replace(volume, label=remove_small_objects(volume.label))
            for z in range(depth):
                if split == "train" and not (volume.label[z].any()
                                             or self.dataset.train_empty_slices):
                    continue
                num_slices += 1
                yield f"{volume.case_id}/{z:05d}", {
                    "image": volume.image[z], "label": volume.label[z],
                    "case_id": volume.case_id, "slice_index": z, "depth": depth,
                    "spacing": volume.spacing}
        log.info("%s/%s: %d slices from %d cases; %d bad files skipped so far%s", self.dataset.name,
                 split, num_slices, num_cases, len(skipped),
                 "".join(f"\n  {path}: {problem}" for path, problem in skipped.items()))
        if num_slices == 0:
            mine = {path: problem for path, problem in skipped.items() if path not in earlier}
            where = os.path.commonpath(list(mine)) if mine else self.data_dir
            raise no_usable_files(self.dataset, mine, where, split)


def dataset_spec(name: str) -> str | DatasetConfig | SyntheticConfig:
    """``--dataset``: a preset name (returned as is); ``brats:k=v,...`` → :func:`.presets.brats`
    and ``demo:k=v,...`` → :func:`.presets.demo` with those options; ``synthetic:k=v,...`` →
    :class:`SyntheticConfig` (integer fields, e.g. ``synthetic:num_cases=4,height=64``); a
    ``.json`` dataset file or an inline JSON dataset (:mod:`.custom`) → its
    :class:`DatasetConfig`."""
    if name.startswith(("synthetic", "brats:", "demo:")):
        kwargs = preset_options(name)[1]
        try:
            if name.startswith("brats:"):
                return brats(**kwargs)
            if name.startswith("demo:"):
                return demo(**kwargs)
            return SyntheticConfig(**{k: int(v) for k, v in kwargs.items()})
        except (TypeError, ValueError) as e:
            raise UsageError(f"--dataset {name!r}: {e}") from None
    if name.lstrip().startswith("{"):
        return dataset_config(parse_dataset_json(name))
    if name.endswith(".json"):
        return dataset_config(read_dataset_file(name))
    if name not in PRESETS:
        raise UsageError(f"unknown dataset {name!r}: a preset ({', '.join(sorted(PRESETS))}; "
                         "brats:sequences=...,classes=...; demo:shift=...), synthetic:k=v,..., a dataset .json "
                         "file, or your own npz files with --files DIR --classes NAME=VALUE,...")
    return name


def data_roots(data_dir: str | Path, manual_dir: str | Path | None = None) -> list[Path]:
    """Where a preset's files are looked for, in order: ``manual_dir`` alone when given, else
    ``<data_dir>/downloads/manual`` (tfds's manual directory) and then ``data_dir`` itself."""
    if manual_dir is not None:
        return [Path(manual_dir).expanduser()]
    data_dir = Path(data_dir).expanduser()
    return [data_dir / "downloads" / "manual", data_dir]


def find_cases(ds: DatasetConfig, roots: Sequence[Path]) -> tuple[Path, dict[str, Reader]]:
    """The folder a files dataset is read from and its cases (case id → reader): a user
    dataset's absolute glob; else, in the first of ``roots`` that holds any, the preset's
    challenge ``.npz`` files directly in it or its original layout below it (:mod:`.originals`).
    None found: :class:`BadInputError` saying where to put what."""
    if Path(ds.file_glob).is_absolute():
        files, where = matching_files(ds.file_glob), Path(ds.file_glob).parent
        if not files:
            state = (f"holds no files matching {Path(ds.file_glob).name!r}" if where.exists()
                     else "does not exist")
            raise BadInputError(where, f"{state}: no .npz files for dataset {ds.name!r}")
        return where, {p.stem: functools.partial(read_npz, p, ds) for p in files}
    for root in roots:
        files = sorted(root.glob(ds.file_glob)) if ds.file_glob and root.is_dir() else []
        if files:
            return root, {p.stem: functools.partial(read_npz, p, ds) for p in files}
        if cases := find_layout(root, ds):
            return root, cases
    wanted = " or ".join(filter(None, (LAYOUT_HELP.get(ds.layout),
                                       ds.file_glob and f"challenge files {ds.file_glob}")))
    where = roots[-1]
    also = "".join(f" or from {r}" for r in roots[:-1])
    raise BadInputError(where, f"{'holds none' if where.exists() else 'does not exist'}: "
                               f"dataset {ds.name!r} reads {wanted} from there{also} (pass "
                               f"--manual-dir DIR, or --data-dir D to look in D/downloads/manual "
                               f"and D; where each dataset comes from: docs/data.md)")


NAMED_BAD_FILES = 5
"""How many bad files :func:`no_usable_files` names (the rest are counted)."""


def no_usable_files(ds: DatasetConfig, problems: dict[str, str], where: str | Path,
                    split: str | None = None) -> BadInputError:
    """One line for a dataset (or one of its splits) none of whose files gives a training
    slice: the first :data:`NAMED_BAD_FILES` files with their problems, and what to do."""
    name = ds.name.rsplit("-", 1)[0] if Path(ds.file_glob).is_absolute() else ds.name
    listed = "; ".join(f"{Path(f).name}: {problem}"
                       for f, problem in list(problems.items())[:NAMED_BAD_FILES])
    more = len(problems) - NAMED_BAD_FILES
    listed += f"; and {more} more" if more > 0 else ""
    if problems and all(p.startswith("unexpected label values") for p in problems.values()):
        todo = ("give those label values a class in --classes (e.g. NAME=1+2), or set "
                '"other_labels": "background" in a dataset .json file to treat them as '
                "background" if Path(ds.file_glob).is_absolute() else
                "these files hold labels the preset does not know: use files of the preset's "
                "dataset, or define your own dataset with --files and --classes")
    else:
        todo = "fix or remove these files, or add files that hold the classes"
    scope = f"the {split} split of dataset {name!r}" if split else f"dataset {name!r}"
    return BadInputError(where, f"no usable file for {scope} ({len(problems)} file(s) "
                                f"checked; {listed}): {todo}")


def check_usable(ds: DatasetConfig, cases: dict[str, Reader], where: str | Path) -> None:
    """Before a build: read ``cases`` until one can give a training slice (it reads, and holds a
    class — or the dataset keeps organ-free training slices); none can:
    :func:`no_usable_files`, raised before tfds starts. Costs one case's read when the first
    case is good."""
    problems: dict[str, str] = {}
    for case_id, read in cases.items():
        try:
            volume = read()
        except BadInputError as e:
            problems[e.path] = e.problem
            continue
        if volume.label.any() or ds.train_empty_slices:
            return
        problems[case_id] = f"holds none of the classes {list(ds.class_names)}"
    raise no_usable_files(ds, problems, where)


def _is_built(data_dir: Path, name: str) -> bool:
    """Whether tfds has a finished build of config ``name`` under ``data_dir`` (its layout:
    ``<data_dir>/automedsam_slices/<config>/<version>/dataset_info.json``), checked without
    constructing the builder."""
    return (data_dir / AutomedsamSlices.name / name / str(AutomedsamSlices.VERSION)
            / "dataset_info.json").is_file()


def prepare(dataset: str | DatasetConfig | SyntheticConfig, data_dir: str | Path, *,
            manual_dir: str | Path | None = None, strict: bool = False) -> AutomedsamSlices:
    """Build the dataset under ``data_dir`` (``~`` expanded) if it is not built yet, and return
    its builder. ``dataset``: a preset name, ``synthetic:k=v,...`` (:func:`dataset_spec`) or a
    config.

    Read a split with ``builder.as_data_source("train")``; class names are in
    ``builder.info.metadata["class_names"]``. ``manual_dir`` holds the challenge ``.npz`` files.
    """
    if isinstance(dataset, str):
        dataset = dataset_spec(dataset)
    data_dir = Path(data_dir).expanduser()
    if isinstance(dataset, DatasetConfig) and PRESETS.get(dataset.name) == dataset:
        dataset = dataset.name
    config = dataset if isinstance(dataset, str) else slices_config(dataset)
    ds = get_preset(config) if isinstance(config, str) else config.dataset
    cases = None
    if ds.source == "files" and not _is_built(data_dir, ds.name):
        # Up front, before tfds starts (and logs): where the files go, and that one is usable.
        where, cases = find_cases(ds, data_roots(data_dir, manual_dir))
        check_usable(ds, cases, where)
    # The folders this build creates (the shallowest that does not exist yet): a build that
    # fails on bad input removes them, so nothing is left behind (tfds removes its own partial
    # split files).
    chain = (data_dir / AutomedsamSlices.name, data_dir, *data_dir.parents)
    created = next((p for p in reversed(chain) if not p.exists()), None)
    builder = AutomedsamSlices(config=config, data_dir=str(data_dir), strict=strict, cases=cases)
    download = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
    try:
        builder.download_and_prepare(download_config=download)
    except BadInputError:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    skipped = builder.info.metadata.get("skipped_files", {})
    if skipped:
        log.warning("%s: %d bad input files were skipped:%s", builder.dataset.name, len(skipped),
                    "".join(f"\n  {path}: {problem}" for path, problem in skipped.items()))
    return builder
