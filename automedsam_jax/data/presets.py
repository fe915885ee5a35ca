"""Dataset presets: which files, which classes, which modality (docs/method.md#dataset-presets).

Each challenge preset reads its dataset's CVPR 2024 challenge ``.npz`` files or the layout its
owners publish (:mod:`.originals`); ``brats`` takes options (:func:`brats`).

Class ids are small contiguous integers ``1..K`` (the class prompt encoder feeds the id through a
linear layer), and 0 is background. ``label_map`` says how the raw label values of a source file
become class ids; a raw value that is neither 0 nor in the map makes the file bad.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Source = Literal["files", "demo", "synthetic"]
Layout = Literal["", "brats", "abdomenct1k", "kvasir", "chestxml"]

BRATS_SEQUENCES = ("flair", "t1", "t1ce", "t2")
"""The BraTS MR sequences by their 2021 names (2023: t2f, t1n, t1c, t2w)."""

DEFAULT_DATA_DIR = "~/tensorflow_datasets"
"""Where the commands build and read datasets unless told otherwise (tfds's default)."""


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One dataset preset.

    name:        preset name (also the tfds config name).
    class_names: name of class id ``i + 1`` at index ``i``.
    modality:    ``"CT"``, ``"MR"``, ``"Endoscopy"``, ``"XRay"`` or ``"synthetic"``.
    ndim:        2 for 2D images (one slice per file), 3 for volumes (cut into axial slices).
    source:      ``"files"`` (challenge ``.npz`` files, or the original release's layout, found
                 under the data directories), ``"demo"`` (the pip-fetched CT) or ``"synthetic"``
                 (generated).
    file_glob:   for ``files``: the challenge files' name pattern inside the manual directory
                 (an absolute glob for a user dataset; empty: no challenge files serve).
    layout:      for ``files``: the original release whose layout is read when no challenge
                 file is found (:mod:`.originals`); empty: challenge files only.
    sequences:   for the ``brats`` layout: the MR sequence of each encoder input channel (1 or 3).
    label_map:   raw label value → class id; ``None`` maps every non-zero value to class 1.
    other_labels: what a raw value outside ``label_map`` means: ``"error"`` (the file is bad) or
                 ``"background"`` (it becomes 0; for multi-organ sources of which we keep a few).
    split_kidney_by_midline: replace class ``kidney_class`` by kidney_right (same id, image left
                 of the body midline: radiological display) and kidney_left (id K).
    split_fractions: (train, validation, test) fractions of the cases.
    train_empty_slices: keep the training slices without foreground (negatives for presence
                 training; the paper's one-class recipe skips them). False: the train split
                 stores only slices with foreground.
    regions:     named unions of class ids scored beside the classes by ``evaluate.py`` (BraTS:
                 ``WT``, ``TC``, ``ET``; :mod:`automedsam_jax.core.regions`); empty: none.
    shifts:      how the validation and test cases are presented (the ``demo``'s blocks:
                 :mod:`.shifts`; ``none``: as they are); training cases never change.
    shift_seed:  for ``demo``: the seed of the shifts' draws.
    """

    name: str
    class_names: tuple[str, ...]
    modality: Literal["CT", "MR", "Endoscopy", "XRay", "synthetic"]
    ndim: Literal[2, 3]
    source: Source = "files"
    file_glob: str = ""
    layout: Layout = ""
    sequences: tuple[str, ...] = ()
    label_map: tuple[tuple[int, int], ...] | None = None
    other_labels: Literal["error", "background"] = "error"
    split_kidney_by_midline: bool = False
    kidney_class: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    train_empty_slices: bool = False
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    shifts: tuple[str, ...] = ("none",)
    shift_seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


BRATS = DatasetConfig(
    name="brats", class_names=("tumour",), modality="MR", ndim=3,
    file_glob="MR_BraTS_FLAIR_*.npz", layout="brats", sequences=("flair",), label_map=None,
    train_empty_slices=True, regions=(("WT", (1,)),))
"""The paper's BraTS: FLAIR, one class (the whole tumour), scored as BraTS's WT region too."""

BRATS_SUBREGIONS = ("necrotic_core", "oedema", "enhancing_tumour")
"""The classes of ``brats:classes=subregions``: BraTS labels 1, 2 and 4 (2021) / 3 (2023)."""
BRATS_CAVITY = "resection_cavity"
"""The fourth class of ``brats:classes=subregions+cavity``: BraTS 2024 GLI label 4."""
BRATS_REGIONS = (("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)))
"""BraTS's nested regions of the subregion classes: whole tumour, tumour core, enhancing."""
BRATS_CLASSES = ("whole", "subregions", "subregions+cavity")

ABDOMENCT1K = DatasetConfig(
    name="abdomenct1k", class_names=("liver", "kidney", "spleen", "pancreas"), modality="CT",
    ndim=3, file_glob="CT_AbdomenCT*.npz", layout="abdomenct1k",
    label_map=((1, 1), (2, 2), (3, 3), (4, 4)), train_empty_slices=True)

ABDOMENCT1K_SPLIT_KIDNEY = dataclasses.replace(
    ABDOMENCT1K, name="abdomenct1k_split_kidney",
    class_names=("liver", "kidney_right", "spleen", "pancreas", "kidney_left"),
    split_kidney_by_midline=True, kidney_class=2)

KVASIR = DatasetConfig(
    name="kvasir", class_names=("polyp",), modality="Endoscopy", ndim=2,
    file_glob="Endoscopy_Kvasir-SEG_*.npz", layout="kvasir", label_map=((1, 1),))

CHESTXML = DatasetConfig(
    name="chestxml", class_names=("lungs",), modality="XRay", ndim=2,
    file_glob="XRay_Chest-Xray-Masks-and-Labels_*.npz", layout="chestxml",
    label_map=((1, 1), (255, 1)))

DEMO = DatasetConfig(
    name="demo", class_names=("liver", "spleen", "pancreas", "kidney_right", "kidney_left"),
    modality="CT", ndim=3, source="demo",
    # TotalSegmentator ids of the example segmentation → demo class ids.
    label_map=((5, 1), (1, 2), (7, 3), (2, 4), (3, 5)), other_labels="background",
    train_empty_slices=True, shifts=("none", "all"))
"""The demo's held-out blocks are scored as they are and as another scanner would show them
(:mod:`.shifts`, case ids ``<block>_all``), so validation chooses on both; ``demo:shift=none``
and ``demo:shift=all`` hold one of the two."""

PRESETS: dict[str, DatasetConfig] = {c.name: c for c in (
    BRATS, ABDOMENCT1K, ABDOMENCT1K_SPLIT_KIDNEY, KVASIR, CHESTXML, DEMO)}


def brats(sequences: str = "flair", classes: str = "whole") -> DatasetConfig:
    """The ``brats`` preset with its options (``--dataset brats:sequences=t1ce+t2+flair,classes=
    subregions``; docs/method.md#dataset-presets).

    sequences: the MR sequence fed to the encoder (``flair``, the paper) or three sequences, one
               per input channel, joined by ``+``; 2021 or 2023 names (``t2f`` = ``flair``,
               ``t1n`` = ``t1``, ``t1c`` = ``t1ce``, ``t2w`` = ``t2``).
    classes:   ``whole`` (one class, the whole tumour: every labelled voxel, the paper),
               ``subregions`` (:data:`BRATS_SUBREGIONS`, three disjoint classes; the BraTS
               regions are their unions: tumour core = necrotic core + enhancing, whole tumour =
               all three) or ``subregions+cavity`` (BraTS 2024 GLI: the three and its label 4,
               the resection cavity, scored as region ``RC`` and part of no other region).

    Anything but the paper's choice reads the original layout only (the challenge files hold
    FLAIR and the whole tumour) and builds apart, under ``brats-<sequences>-<classes>``.
    """
    names = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}
    seqs = tuple(names.get(s.strip().lower(), s.strip().lower()) for s in sequences.split("+"))
    if (len(seqs) not in (1, 3) or not set(seqs) <= set(BRATS_SEQUENCES)
            or len(set(seqs)) < len(seqs)):
        raise ValueError(f"brats: sequences={sequences!r}: name one MR sequence or three distinct "
                         f"ones joined by '+', each of {', '.join(BRATS_SEQUENCES)} (or the 2023 "
                         f"names {', '.join(names)})")
    if classes not in BRATS_CLASSES:
        raise ValueError(f"brats: classes={classes!r}: choose {', '.join(BRATS_CLASSES)}")
    if seqs == BRATS.sequences and classes == "whole":
        return BRATS
    name = "-".join(("brats", *seqs, *classes.split("+")))
    if classes == "whole":
        return dataclasses.replace(BRATS, name=name, file_glob="", sequences=seqs)
    cavity = classes == "subregions+cavity"
    names = BRATS_SUBREGIONS + ((BRATS_CAVITY,) if cavity else ())
    return dataclasses.replace(
        BRATS, name=name, file_glob="", sequences=seqs, class_names=names,
        label_map=tuple((i, i) for i in range(1, len(names) + 1)),
        regions=BRATS_REGIONS + ((("RC", (4,)),) if cavity else ()))


def demo(shift: str = "none+all", seed: str | int = 0) -> DatasetConfig:
    """The ``demo`` preset with its validation and test blocks presented otherwise (``--dataset
    demo:shift=all``, ``demo:shift=none``, ``demo:shift=spacing+contrast,seed=1``;
    docs/method.md#shifted-evaluation). The preset itself is ``shift=none+all``.

    shift: the presentations of each held-out block, joined by ``+``: ``none`` (the block as it
           is), ``spacing``, ``contrast``, ``kernel``, ``pose`` or ``all`` (:data:`.shifts.SHIFTS`).
    seed:  the seed of each case's draw of the shifts' parameters.

    Builds apart, under ``demo-<shifts>`` (and ``-seed<seed>`` for a seed other than 0).
    """
    from .shifts import parse_shifts

    names = parse_shifts(shift)
    try:
        seed = int(seed)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError("demo: seed must be an integer >= 0")
    if names == DEMO.shifts and seed == 0:
        return DEMO
    return dataclasses.replace(DEMO, name="-".join(("demo", *names)) + (f"-seed{seed}" if seed
                                                                        else ""),
                               shifts=names, shift_seed=seed)


def preset_options(spec: str) -> tuple[str, dict[str, str]]:
    """A ``--dataset`` spelling with options, ``name:k=v,...``, as ``(name, {k: v})``."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        options[k.strip()] = v.strip()
    return name, options


def get_preset(name: str) -> DatasetConfig:
    """The preset called ``name`` (synthetic datasets come from :class:`synthetic.SyntheticConfig`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(PRESETS)} "
                         "or build a synthetic one with automedsam_jax.data.SyntheticConfig(...)")
    return PRESETS[name]
