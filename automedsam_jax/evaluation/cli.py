"""``python evaluate.py``: score a trained AutoMedSAM, or the box-prompted MedSAM baseline, on a
dataset split and write the paper-style tables.

    python evaluate.py                                   # the demo run (runs/demo), test split
    python evaluate.py --checkpoint runs/brats --dataset brats --data-dir data/
    python evaluate.py --prompt box --box-offset 5       # pretrained LiteMedSAM, GT box + 5 px
    python evaluate.py --prompt box --box-offset image --checkpoint work/medsam_vit_b
    python evaluate.py --dataset demo:shift=all          # the demo run on the shifted test blocks

AutoMedSAM (default): ``--checkpoint`` is a training work directory (its ``best/`` export, else
``final/``) or a model directory, segmented through its own prompt route (``--prompt``, as
trained: ``class``, ``map`` or ``refine``, :mod:`automedsam_jax.core.routes`); dataset, data and
manual directories default to those the model was trained with. Box baseline (``--prompt box``):
``--checkpoint`` is a converted MedSAM/LiteMedSAM (``python -m convert``) or ``pretrained``
(default: LiteMedSAM via pip); every class present in a slice's GT gets its box enlarged by ``--box-offset`` px (default 5, the paper's MedSAM setting:
its Table 8 row for 5 px equals MedSAM in Table 2), ``image`` for the whole image; absent classes
get no box and an empty prediction.

On several hosts (``--distributed``) each process evaluates its share of the cases
(:mod:`.hosts`) and process 0 writes the gathered scores.

A dataset whose preset declares regions (the BraTS presets: WT, TC, ET) is also scored per region
with Dice, HD95, sensitivity, specificity and NSD (``--lesion-wise``: BraTS 2023's lesion-wise
Dice and HD95 too; :mod:`automedsam_jax.core.regions`); ``--hd95`` adds each class's HD95.

Writes ``metrics.json``, ``metrics.csv`` and ``table.md`` (see :mod:`.report`) to ``--out``
(default ``<workdir>/eval/<dataset>_<split>``, or ``runs/box_baseline/<dataset>_<split>_<offset>``)
and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Literal

import grain
import jax
import simple_parsing as sp

from ..core.distributed import DistributedConfig, maybe_initialize_distributed
from ..core.routes import get_route
from ..core.metrics import DEFAULT_TOLERANCE
from ..data import DEFAULT_DATA_DIR, eval_dataset, prepare
from ..data.builder import dataset_spec
from ..data.custom import UserDataset
from ..data.presets import DEMO
from ..inference.options import InferenceConfig
from ..inference.segmenter import Segmenter
from ..io.cli import ArgumentParser, configure_logging
from ..io.compilation_cache import CompilationCacheConfig
from ..io.errors import BadInputError, UsageError
from ..io.paths import AnyPath
from ..io.rundir import DEFAULT_WORKDIR, EXPORTS, load_automedsam, load_sam
from ..io.staging import stage_in
from .evaluator import Evaluation, evaluate_records
from .hosts import gather, process_share
from .report import nsd_units, paper_table, write_reports


def box_offset(text: str) -> int | str:
    """``--box-offset``: a non-negative integer (pixels) or ``image``."""
    if text == "image":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels >= 0 or 'image', got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What one evaluation scores, on which data, and where it writes (with several hosts, each
    process evaluates its share of the cases and process 0 writes the gathered scores)."""

    checkpoint: str | None = None
    """class prompts: a training work directory or model directory (default: the demo run,
    runs/demo);
    box prompts: a converted model directory or 'pretrained' (default)"""
    dataset: str | None = None
    """data preset, synthetic:k=v,..., a dataset .json file or the name of your own --files
    (default: the model's training dataset; box prompts: demo)"""
    data_dir: str | None = None
    """tfds data directory (default: the model's, else ~/tensorflow_datasets)"""
    manual_dir: str | None = None
    """directory with a preset's files, original release or challenge .npz (default: the
    model's, else <data-dir>/downloads/manual, then <data-dir>)"""
    split: Literal["test", "validation", "train"] = "test"
    """the dataset split scored"""
    out: str | None = None
    """output directory, a local path or gs:// URL (default <workdir>/eval/<dataset>_<split>;
    box prompts: runs/box_baseline/<dataset>_<split>_offset<offset>)"""
    prompt: Literal["class", "map", "refine", "box"] | None = None
    """the prompt route: the model's own when left out (class, map or refine, as trained; naming
    it checks it); box: the backbone with GT boxes (paper §4.5)"""
    box_offset: int | str | None = sp.field(default=None, type=box_offset, metavar="PX|image")
    """box prompts: pixels added to each side of the GT box (original frame), or 'image' for
    the whole image (default 5)"""
    inference: InferenceConfig = InferenceConfig()
    hosts: DistributedConfig = DistributedConfig()
    xla: CompilationCacheConfig = CompilationCacheConfig()
    tolerance: float = DEFAULT_TOLERANCE
    """NSD tolerance τ (mm for volumes, px for 2D images)"""
    challenge_nsd: bool = False
    """NSD = 0 where DSC <= 0.2 (challenge rule)"""
    presence: bool = True
    """class prompts: apply the presence rule calibrated with the model (a class's mask only
    on the slices where it is found); --no-presence keeps every class's mask on every slice"""
    hd95: bool = False
    """also each class's HD95 (mm for volumes, px for 2D images; a class in only one of the GT
    and the prediction scores the volume's diagonal). A dataset with regions (BraTS WT / TC /
    ET) always has their HD95"""
    lesion_wise: bool = False
    """also the regions' lesion-wise Dice and HD95 as BraTS 2023 defines them (3-D datasets
    with regions)"""

    def __post_init__(self):
        if self.box_offset is not None:
            if self.prompt is None or get_route(self.prompt).trains:  # not the box baseline
                raise ValueError("--box-offset needs --prompt box (class prompts take no box); "
                                 "add --prompt box or leave --box-offset out")
            if self.box_offset != "image" and not (
                    isinstance(self.box_offset, int) and self.box_offset >= 0):
                raise ValueError(f"--box-offset must be a number of pixels >= 0 or 'image', "
                                 f"got {self.box_offset!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"--tolerance must be >= 0 (mm for volumes, px for 2D images), "
                             f"got {self.tolerance}")


def parser() -> ArgumentParser:
    """The command line of :class:`EvalConfig` and :class:`UserDataset`."""
    summary = __doc__.replace("``", "").split("\n\n")[0]
    p = ArgumentParser("evaluate.py", description=" ".join(summary.split()))
    p.add_arguments(EvalConfig, dest="cfg")
    p.add_arguments(UserDataset, dest="user")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[EvalConfig, UserDataset]:
    """The evaluation's config and the user-dataset options; :class:`UsageError` for an
    unusable option (a field's check included)."""
    args = parser().parse_args(argv)
    return args.cfg, args.user


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    try:
        cfg, user = parse_args(argv)
        maybe_initialize_distributed(cfg.hosts.distributed)
        cfg.xla.apply()
        cfg = dataclasses.replace(cfg, dataset=user.resolve(cfg.dataset))
        if cfg.dataset is not None:
            dataset_spec(cfg.dataset)  # an unknown --dataset, refused before a model is loaded
        ev, paths, table = run(cfg)
    except (FileNotFoundError, BadInputError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if jax.process_index() != 0:
        return 0
    print(table)
    print(f"{ev.num_slices} slices × {len(ev.class_names)} classes in {ev.seconds:.1f} s "
          f"({ev.num_slices / max(ev.seconds, 1e-9):.2f} slices/s, compilation included)")
    if jax.process_count() > 1:
        print(f"{len(ev.cases)} cases split over {jax.process_count()} processes")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def run(args: EvalConfig) -> tuple[Evaluation, dict[str, AnyPath], str]:
    """Load, evaluate, write; returns the evaluation, the written paths and the table.
    ``args.dataset`` is a resolved ``--dataset`` (:meth:`UserDataset.resolve`)."""
    # a route that trains nothing (box) prompts a backbone; the others run the trained model
    baseline = args.prompt is not None and not get_route(args.prompt).trains
    trained = None
    if baseline:
        model, directory = load_sam(args.checkpoint or "pretrained")
        seen, backbone = (lambda field: None), model.config.name
    else:
        if args.checkpoint is None and not Path(DEFAULT_WORKDIR).exists():
            raise FileNotFoundError(f"the demo run {DEFAULT_WORKDIR} does not exist yet: train it "
                                    "with `python train.py`, or pass --checkpoint")
        trained = load_automedsam(args.checkpoint or DEFAULT_WORKDIR)
        model, directory, seen = trained.model, trained.directory, trained.data
        backbone = model.config.sam.name
        check_route(args.prompt, model.config.prompt, directory)
    builder = prepare(args.dataset or seen("dataset") or DEMO.name,
                      stage_in(args.data_dir or seen("data_dir") or DEFAULT_DATA_DIR),
                      manual_dir=args.manual_dir or seen("manual_dir"))
    class_names = tuple(builder.info.metadata["class_names"])
    name = builder.dataset.name
    if args.split not in builder.info.splits:
        raise BadInputError(builder.data_dir, f"dataset {name!r} has no {args.split!r} split "
                                              f"(it has {sorted(builder.info.splits)})")
    if trained is not None and class_names != trained.class_names:
        raise BadInputError(directory, f"trained on classes {list(trained.class_names)}, but "
                                       f"dataset {name!r} has {list(class_names)}")
    classes = range(1, len(class_names) + 1)
    if baseline:
        offset = 5 if args.box_offset is None else args.box_offset
        segmenter = Segmenter(model, classes, args.inference.batch_size,
                              route=get_route(args.prompt).with_offset(offset))
        out = args.out or Path("runs/box_baseline") / f"{name}_{args.split}_offset{offset}"
        method = f"{backbone}, " + ("whole-image box" if offset == "image"
                                    else f"GT box + {offset} px")
    else:
        segmenter = Segmenter(model, classes, args.inference.batch_size,
                              trained.min_area if args.presence else 0.0)
        workdir = directory.parent if directory.name in EXPORTS else directory
        out = args.out or workdir / "eval" / f"{name}_{args.split}"
        method = f"AutoMedSAM ({backbone}, {model.config.prompt} route)"
        offset = None

    share, case_order = process_share(builder.as_data_source(args.split))
    records = eval_dataset(share, segmenter.frame).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2 * args.inference.batch_size))
    regions = builder.dataset.regions
    if args.lesion_wise and not (regions and builder.dataset.ndim == 3):
        raise UsageError(f"--lesion-wise scores the regions of a 3-D dataset (BraTS); dataset "
                         f"{name!r} has {'no regions' if not regions else '2-D images'}")
    three_d = args.inference.postprocess == "3d"
    ev = gather(evaluate_records(segmenter, records, class_names, args.tolerance,
                                 args.challenge_nsd, three_d, hd95=args.hd95, regions=regions,
                                 lesions=args.lesion_wise), case_order)
    title = (f"{method} · {name}, {args.split} split: {_count(len(ev.cases), 'case')}, "
             f"{_count(ev.num_slices, 'slice')} · NSD τ = {args.tolerance:g} {nsd_units(ev)}"
             + (" (challenge rule)" if args.challenge_nsd else "")
             + (" · 3-D post-processing" if three_d else ""))
    meta = {"method": "box" if baseline else "automedsam", "prompt": segmenter.route.name,
            "backbone": backbone,
            "checkpoint": str(directory), "dataset": name, "split": args.split,
            "box_offset": offset, "batch_size": args.inference.batch_size,
            "min_area": segmenter.min_area, "postprocess": args.inference.postprocess,
            "hd95": args.hd95, "lesion_wise": args.lesion_wise}
    paths = write_reports(ev, out, name, title, meta) if jax.process_index() == 0 else {}
    return ev, paths, paper_table(ev, title)


def check_route(asked: str | None, route: str, directory: Path) -> None:
    """``--prompt`` against the model's own route: left out or the same is fine; ``class`` on a
    model of another route is the spelling of earlier releases for "the AutoMedSAM" (warned);
    anything else is a :class:`UsageError`."""
    if asked is None or asked == route:
        return
    if asked == "class":
        warnings.warn(f"--prompt class for a model of the {route!r} route: in earlier releases "
                      "--prompt class meant any AutoMedSAM; leave --prompt out (the model's own "
                      f"route) or pass --prompt {route}. This spelling will be refused in the "
                      "next release.", DeprecationWarning, stacklevel=2)
        print(f"warning: --prompt class on a {route!r}-route model: evaluating its own route "
              f"(leave --prompt out, or pass --prompt {route})", file=sys.stderr)
        return
    raise UsageError(f"--prompt {asked}: {directory} was trained with the {route!r} route; leave "
                     f"--prompt out to evaluate it, or pass --prompt box for the backbone with "
                     "ground-truth boxes")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

