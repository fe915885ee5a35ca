"""Datasets defined by the user: a folder or glob of challenge ``.npz`` files, the class names with
their label values, 2D/3D and modality — on the command line or in a small JSON file.

    python train.py --dataset liver_ct --files /data/liver --classes liver=1,tumour=2
    python train.py --dataset my_dataset.json
    python evaluate.py --checkpoint runs/liver_ct          # the dataset comes with the model

A JSON file holds the same fields::

    {"name": "liver_ct", "files": "/data/liver/*.npz", "classes": {"liver": 1, "tumour": [2, 3]},
     "modality": "CT", "ndim": 3, "other_labels": "error", "split_fractions": [0.8, 0.1, 0.1]}

``files`` is a folder (its ``*.npz``) or a glob, relative to the JSON file or the working
directory; ``classes`` maps each class name, in class-id order (ids 1..K), to its raw label
value(s) in the files (``liver=1,tumour=2+3`` on the command line). ``ndim`` defaults to 3 when
the first file carries ``spacing`` (the challenge's 3D files do), else 2; ``modality`` to the
challenge file-name prefix (``CT_``, ``MR_``, ...) or ``"other"``; ``other_labels``: what a raw
value not listed means, ``"error"`` (the file is skipped as bad) or ``"background"``.

The dataset is built by the same tfds builder as the presets, with the same bad-file handling.
Its canonical form is one line of JSON (:func:`dataset_json`, absolute paths): what
``TrainConfig.dataset`` records and every command accepts as ``--dataset``. The built dataset's
tfds config is named after the dataset and a hash of that JSON and of the files' names and sizes,
so changing the classes or the files builds anew instead of reading a stale build.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from pathlib import Path

from ..io.errors import BadInputError, UsageError
from ..io.npz import load_npz, npz_ndim
from .presets import PRESETS, DatasetConfig

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MODALITY_PREFIXES = ("CT", "MR", "PET", "US", "XRay", "Endoscopy", "Dermoscopy", "Fundus",
                     "Microscopy", "Mammography", "OCT")
FIELDS = ("name", "files", "classes", "modality", "ndim", "other_labels", "split_fractions")


def parse_classes(text: str) -> dict[str, list[int]]:
    """``"liver=1,tumour=2+3"`` → ``{"liver": [1], "tumour": [2, 3]}`` (order kept)."""
    classes: dict[str, list[int]] = {}
    if not text.replace(",", "").strip():
        raise UsageError(f"--classes {text!r} names no class: give NAME=VALUE[+VALUE...] items "
                         "separated by commas, the label value of each class in the files "
                         "(e.g. liver=1,tumour=2)")
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, values = item.partition("=")
        try:
            raw = [int(v) for v in values.split("+")] if sep else []
        except ValueError:
            raw = []
        if not name.strip() or not raw:
            raise UsageError(f"--classes: expected NAME=VALUE[+VALUE...] items separated by "
                             f"commas (e.g. liver=1,tumour=2), got {item!r}")
        classes[name.strip()] = raw
    return classes


def resolve_files(files: str | Path, base: Path | None = None) -> str:
    """A folder (→ its ``*.npz``) or a glob, made absolute against ``base`` (default: the
    working directory)."""
    path = Path(files).expanduser()
    if not path.is_absolute():
        path = Path(os.path.normpath((base or Path.cwd()) / path))
    if path.is_dir():
        path = path / "*.npz"
    return str(path)


def matching_files(pattern: str) -> list[Path]:
    """The ``.npz`` files of a dataset's ``files`` glob, sorted."""
    return sorted(Path(p) for p in glob.glob(pattern) if p.endswith(".npz"))


def _infer_ndim(found: list[Path]) -> int:
    """The ndim of the first file that reads; 3 when none does (the dataset is then refused
    with every file's problem, :func:`usable`)."""
    for path in found:
        try:
            return npz_ndim(load_npz(path, required=("imgs",), optional=("spacing",)))
        except BadInputError:
            continue
    return 3


def _infer_modality(first: Path) -> str:
    prefix = first.name.split("_", 1)[0]
    return prefix if prefix in MODALITY_PREFIXES else "other"


def define_dataset(name: str, files: str | Path, classes: dict[str, list[int] | int] | str, *,
                   modality: str | None = None, ndim: int | None = None,
                   other_labels: str = "error",
                   split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                   base: Path | None = None) -> dict:
    """A user dataset's canonical fields (absolute ``files``, every default filled), checked:
    the name, the classes, and that ``files`` matches at least one ``.npz`` file."""
    if not NAME.match(name or ""):
        raise UsageError(f"dataset name {name!r}: use letters, digits, '_', '.', '-'")
    if name in PRESETS or name.startswith("synthetic"):
        raise UsageError(f"dataset name {name!r} is taken by a preset; choose another")
    if isinstance(classes, str):
        classes = parse_classes(classes)
    classes = {str(k): sorted({int(v)} if isinstance(v, int) else {int(x) for x in v})
               for k, v in classes.items()}
    if not classes:
        raise UsageError("a dataset needs at least one class (--classes liver=1,...)")
    values = [v for vs in classes.values() for v in vs]
    if len(values) != len(set(values)) or not all(1 <= v <= 255 for v in values):
        raise UsageError(f"class label values must be distinct integers in 1..255, got {classes}")
    pattern = resolve_files(files, base)
    found = matching_files(pattern)
    if not found:
        raise BadInputError(pattern, f"no .npz files for dataset {name!r}: put the "
                                     "challenge-format files (imgs, gts, and spacing for 3D) "
                                     "there, or point --files at their folder or a glob")
    if ndim not in (None, 2, 3):
        raise UsageError(f"ndim must be 2 or 3, got {ndim}")
    if other_labels not in ("error", "background"):
        raise UsageError(f"other_labels must be 'error' or 'background', got {other_labels!r}")
    if len(split_fractions) != 3 or abs(sum(split_fractions) - 1) > 1e-6:
        raise UsageError(f"split_fractions must be 3 fractions summing to 1, got {split_fractions}")
    return {"name": name, "files": pattern, "classes": classes,
            "modality": modality or _infer_modality(found[0]),
            "ndim": int(ndim or _infer_ndim(found)), "other_labels": other_labels,
            "split_fractions": [float(f) for f in split_fractions]}


def dataset_json(fields: dict) -> str:
    """The canonical one-line JSON of a user dataset (what ``--dataset`` accepts back); the
    fields in :data:`FIELDS` order, the classes in class-id order."""
    return json.dumps({k: fields[k] for k in FIELDS}, separators=(",", ":"))


def read_dataset_file(path: str | Path) -> dict:
    """The canonical fields of a dataset JSON file (``files`` relative to the file)."""
    path = Path(path).expanduser()
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, "no such dataset file") from None
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"not a readable JSON dataset definition ({e})") from e
    return _from_fields(spec, path.parent.absolute(), str(path))


def _from_fields(spec, base: Path | None, where: str) -> dict:
    if not isinstance(spec, dict) or not {"name", "files", "classes"} <= spec.keys():
        raise BadInputError(where, "a dataset definition needs at least 'name', 'files' and "
                                   "'classes'")
    unknown = set(spec) - set(FIELDS)
    if unknown:
        raise BadInputError(where, f"unknown dataset fields {sorted(unknown)} (known: {FIELDS})")
    try:
        return define_dataset(spec["name"], spec["files"], spec["classes"],
                              modality=spec.get("modality"), ndim=spec.get("ndim"),
                              other_labels=spec.get("other_labels", "error"),
                              split_fractions=tuple(spec.get("split_fractions",
                                                             (0.8, 0.1, 0.1))), base=base)
    except UsageError as e:
        raise BadInputError(where, str(e)) from e


def parse_dataset_json(text: str) -> dict:
    """The fields of an inline JSON dataset (``--dataset '{...}'``, as runs record it)."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise UsageError(f"--dataset: not valid JSON ({e})") from e
    return _from_fields(spec, None, "--dataset")


def dataset_config(fields: dict) -> DatasetConfig:
    """The :class:`DatasetConfig` of a user dataset's canonical fields."""
    classes = fields["classes"]
    files = matching_files(fields["files"])
    digest = hashlib.sha256(dataset_json(fields).encode())
    for f in files:
        digest.update(f"{f.name}:{f.stat().st_size};".encode())
    return DatasetConfig(
        name=f"{fields['name']}-{digest.hexdigest()[:10]}", class_names=tuple(classes),
        modality=fields["modality"], ndim=fields["ndim"], source="files", file_glob=fields["files"],
        label_map=tuple((v, i) for i, vs in enumerate(classes.values(), start=1) for v in vs),
        other_labels=fields["other_labels"],
        split_fractions=tuple(fields["split_fractions"]))



def dataset_name(spec: str) -> str:
    """A short name for a ``--dataset`` value (e.g. for the default work directory ``runs/NAME``):
    the preset, ``synthetic``, or a user dataset's ``name``."""
    if spec.lstrip().startswith("{"):
        return str(json.loads(spec).get("name", "custom"))
    if spec.endswith(".json"):
        return str(json.loads(Path(spec).expanduser().read_text()).get("name", Path(spec).stem))
    return spec.split(":")[0]


@dataclasses.dataclass(frozen=True)
class UserDataset:
    """Your own dataset, defined on the command line (named by --dataset NAME)."""

    files: str | None = None
    """your own dataset: a folder or glob of challenge-format .npz files (imgs, gts, spacing for
    3D); name it with --dataset NAME and give --classes"""
    classes: str | None = None
    """with --files: class names with their label values in the files, in class-id order, e.g.
    liver=1,tumour=2+3"""
    modality: str | None = None
    """with --files: CT, MR, ... (default: from the file names)"""
    ndim: int | None = None
    """with --files: 2D images or 3D volumes (default: 3 when the files carry spacing)"""

    def resolve(self, dataset: str | None) -> str | None:
        """:func:`dataset_argument` of ``dataset`` with these fields."""
        return dataset_argument(dataset, self.files, self.classes, self.modality, self.ndim)


def dataset_argument(dataset: str | None, files: str | None, classes: str | None,
                     modality: str | None = None, ndim: int | None = None) -> str | None:
    """What ``--dataset`` means with the fields of :class:`UserDataset`: as given
    without ``--files``; with it, the canonical JSON of the dataset they define (named
    ``dataset``, default the folder's name). A user ``.json`` file becomes its canonical JSON
    too, so a run records its dataset whole."""
    if files is None:
        if classes is not None or modality or ndim:
            raise UsageError("--classes, --modality and --ndim describe your own files: add "
                             "--files DIR")
        if dataset is not None and dataset.endswith(".json"):
            return dataset_json(usable(read_dataset_file(dataset)))
        return dataset
    if classes is None or not classes.replace(",", "").strip():
        given = "" if classes is None else f"; --classes {classes!r} names no class"
        raise UsageError("--files needs --classes NAME=VALUE,... (the label value of each class "
                         f"in the files, e.g. liver=1,tumour=2){given}")
    folder = Path(files).expanduser()
    name = dataset or (folder if folder.is_dir() else folder.parent).absolute().name
    return dataset_json(usable(define_dataset(name, files, classes, modality=modality,
                                              ndim=ndim)))


def usable(fields: dict) -> dict:
    """``fields`` (a user dataset's canonical fields) once one of its files can give a training
    slice; none can: one :class:`BadInputError` naming the files and their problems
    (:func:`automedsam_jax.data.builder.check_usable`), raised while the command line is read,
    before a command writes anything or a build starts. Costs one file's read when the first
    file is good."""
    from .builder import check_usable, find_cases  # the builder imports this module

    config = dataset_config(fields)
    files = Path(fields["files"])
    check_usable(config, find_cases(config, ())[1],
                 files.parent if glob.has_magic(str(files)) else files)
    return fields
