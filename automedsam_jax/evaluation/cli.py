"""``python evaluate.py``: score a trained AutoMedSAM, or the box-prompted MedSAM baseline, on a
dataset split and write the paper-style tables.

    python evaluate.py                                   # the demo run (runs/demo), test split
    python evaluate.py --checkpoint runs/brats --dataset brats --data-dir data/
    python evaluate.py --prompt box --box-offset 5       # pretrained LiteMedSAM, GT box + 5 px
    python evaluate.py --prompt box --box-offset image --checkpoint work/medsam_vit_b

AutoMedSAM (``--prompt class``, default): ``--checkpoint`` is a training work directory (its
``best/`` export, else ``final/``) or a model directory; dataset, data and manual directories
default to those the model was trained with. Box baseline (``--prompt box``): ``--checkpoint`` is
a converted MedSAM/LiteMedSAM (``python -m convert``) or ``pretrained`` (default: LiteMedSAM via
pip); every class present in a slice's GT gets its box enlarged by ``--box-offset`` px (default 5,
the paper's MedSAM setting: its Table 8 row for 5 px equals MedSAM in Table 2), ``image`` for the
whole image; absent classes get no box and an empty prediction.

On several hosts (``--distributed``) each process evaluates its share of the cases
(:mod:`.hosts`) and process 0 writes the gathered scores.

Writes ``metrics.json``, ``metrics.csv`` and ``table.md`` (see :mod:`.report`) to ``--out``
(default ``<workdir>/eval/<dataset>_<split>``, or ``runs/box_baseline/<dataset>_<split>_<offset>``)
and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grain
import jax

from ..core.distributed import maybe_initialize_distributed
from ..core.metrics import DEFAULT_TOLERANCE
from ..data import DEFAULT_DATA_DIR, eval_dataset, prepare
from ..data.custom import add_dataset_arguments, dataset_argument
from ..data.presets import DEMO
from ..io.errors import BadInputError, UsageError
from ..io.rundir import DEFAULT_WORKDIR, EXPORTS, load_automedsam, load_sam
from .evaluator import Evaluation, evaluate_records
from .hosts import gather, process_share
from .report import nsd_units, paper_table, write_reports
from .segmenter import BoxSegmenter, ClassSegmenter


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--checkpoint", help=f"class prompts: a training work directory or model directory "
      f"(default {DEFAULT_WORKDIR}); box prompts: a converted model directory or 'pretrained' "
      "(default)")
    a("--dataset", help="data preset, synthetic:k=v,..., a dataset .json file or the name of your "
      "own --files (default: the model's training dataset; box prompts: demo)")
    add_dataset_arguments(p)
    a("--data-dir", help="tfds data directory (default: the model's, else ~/tensorflow_datasets)")
    a("--manual-dir", help="directory of the challenge .npz files")
    a("--split", default="test", choices=("test", "validation", "train"))
    a("--out", type=Path, help="output directory")
    a("--prompt", default="class", choices=("class", "box"),
      help="class: AutoMedSAM; box: MedSAM/LiteMedSAM with GT boxes (paper §4.5)")
    a("--box-offset", type=box_offset, help="box prompts: pixels added to each side of the GT "
      "box (original frame), or 'image' (default 5)")
    a("--batch-size", type=int, default=4, help="slices embedded per model call")
    a("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="NSD tolerance τ (mm for "
      "volumes, px for 2D images)")
    a("--challenge-nsd", action="store_true", help="NSD = 0 where DSC <= 0.2 (challenge rule)")
    a("--distributed", default="auto", choices=("auto", "on", "off"), help="split the cases "
      "over the processes of a multi-host job (jax.distributed; auto: when the environment "
      "names a coordinator, Slurm/Open MPI tasks or several TPU hosts) and gather the scores")
    a("--postprocess", choices=("none", "3d"), default="none", help="3d: per class, presence "
      "smoothed along z and the largest 3-D connected component of each case "
      "(automedsam_jax/evaluation/postprocess.py)")
    a("--no-presence", action="store_true", help="class prompts: keep every class's mask on "
      "every slice, ignoring the presence rule calibrated with the model")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.prompt == "class" and args.box_offset is not None:
        p.error("--box-offset needs --prompt box")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    maybe_initialize_distributed(args.distributed)
    try:
        args.dataset = dataset_argument(args.dataset, args.files, args.classes, args.modality,
                                        args.ndim)
        ev, paths, table = run(args)
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


def run(args: argparse.Namespace) -> tuple[Evaluation, dict[str, Path], str]:
    """Load, evaluate, write; returns the evaluation, the written paths and the table."""
    if args.prompt == "class":
        if args.checkpoint is None and not Path(DEFAULT_WORKDIR).exists():
            raise FileNotFoundError(f"the demo run {DEFAULT_WORKDIR} does not exist yet: train it "
                                    "with `python train.py`, or pass --checkpoint")
        trained = load_automedsam(args.checkpoint or DEFAULT_WORKDIR)
        model, directory, seen = trained.model, trained.directory, trained.data
        backbone = model.config.sam.name
    else:
        model, directory = load_sam(args.checkpoint or "pretrained")
        seen, backbone = (lambda field: None), model.config.name
    builder = prepare(args.dataset or seen("dataset") or DEMO.name,
                      args.data_dir or seen("data_dir") or DEFAULT_DATA_DIR,
                      manual_dir=args.manual_dir or seen("manual_dir"))
    class_names = tuple(builder.info.metadata["class_names"])
    name = builder.dataset.name
    if args.split not in builder.info.splits:
        raise BadInputError(builder.data_dir, f"dataset {name!r} has no {args.split!r} split "
                                              f"(it has {sorted(builder.info.splits)})")

    if args.prompt == "class":
        if class_names != trained.class_names:
            raise BadInputError(directory, f"trained on classes {list(trained.class_names)}, but "
                                           f"dataset {name!r} has {list(class_names)}")
        segmenter = ClassSegmenter(model, range(1, len(class_names) + 1), args.batch_size,
                                   0.0 if args.no_presence else trained.min_area)
        workdir = directory.parent if directory.name in EXPORTS else directory
        out = args.out or workdir / "eval" / f"{name}_{args.split}"
        method = f"AutoMedSAM ({backbone})"
        offset = None
    else:
        offset = 5 if args.box_offset is None else args.box_offset
        segmenter = BoxSegmenter(model, len(class_names), offset, args.batch_size)
        out = args.out or Path("runs/box_baseline") / f"{name}_{args.split}_offset{offset}"
        method = f"{backbone}, " + ("whole-image box" if offset == "image"
                                    else f"GT box + {offset} px")

    share, case_order = process_share(builder.as_data_source(args.split))
    records = eval_dataset(share, segmenter.frame).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2 * args.batch_size))
    ev = gather(evaluate_records(segmenter, records, class_names, args.tolerance,
                                 args.challenge_nsd, args.postprocess == "3d"), case_order)
    title = (f"{method} · {name}, {args.split} split: {_count(len(ev.cases), 'case')}, "
             f"{_count(ev.num_slices, 'slice')} · NSD τ = {args.tolerance:g} {nsd_units(ev)}"
             + (" (challenge rule)" if args.challenge_nsd else "")
             + (" · 3-D post-processing" if args.postprocess == "3d" else ""))
    meta = {"method": "automedsam" if args.prompt == "class" else "box", "backbone": backbone,
            "checkpoint": str(directory), "dataset": name, "split": args.split,
            "box_offset": offset, "batch_size": args.batch_size, "min_area": segmenter.min_area,
            "postprocess": args.postprocess}
    paths = write_reports(ev, out, name, title, meta) if jax.process_index() == 0 else {}
    return ev, paths, paper_table(ev, title)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

