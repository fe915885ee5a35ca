"""grain input pipelines: training batches and per-slice evaluation records.

Both read a random-access source of slice records (``builder.as_data_source(split)``, see
:mod:`.builder`) and apply the frame-specific preprocessing of :mod:`.sample` on the fly, so one
built dataset serves the 1024 (SAM/MedSAM) and 256 (LiteMedSAM) frames.

Training (:func:`train_dataset`): global shuffle (reshuffled every epoch) → per-sample random
transform (one class present in the slice, chosen at random — or every class 1..K of the slice,
``classes_per_step="all"``; an optional augmented variant of the slice, :mod:`.augment`; random
horizontal/vertical flips of image and label in the original frame, so image, mask, box and
distance map stay consistent; box jitter) → this process's share (multi-host) → batches.
Everything is a deterministic
function of the seed and the element index, so the iterator state (``it.get_state()`` /
``it.set_state(state)``) resumes a run exactly, with or without worker processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import grain
import numpy as np
from absl import flags

from ..core.config import FrameConfig
from ..core.preprocess import model_input
from .augment import AugmentConfig
from .labels import present_classes
from .sample import class_sample, grid_labels, pixel_spacing, slice_sample, training_view

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The training samples: what one sample holds and how it is varied (the run's batch size,
    seed, epochs and classes are :func:`train_dataset`'s arguments)."""

    flips: bool = True
    """random horizontal and vertical flips of training slices (p = 0.5 each; the cache holds 4
    variants of each)"""
    box_jitter: bool = True
    """move each box side outwards by 0..J px (J = 20 at 1024 px, 5 at 256 px)"""
    classes_per_step: Literal["one", "all"] = "one"
    """one: one class present in the slice, chosen at random (the paper); all: every class 1..K
    of the slice against its one embedding, absent ones with empty targets"""
    negatives: bool = False
    """absent classes as negatives (empty targets) and the dataset's organ-free training slices:
    with one class per slice, an absent class in negative_fraction of the samples (always on a
    slice without foreground); with all, every absent class"""
    negative_fraction: float = 0.25
    """with negatives and one class per slice: the fraction of samples that take an absent
    class"""
    augment: AugmentConfig = AugmentConfig()
    num_workers: int = 0
    """grain worker processes (0: in the main process)"""
    num_threads: int = 1
    """grain read threads of each process (the per-sample work is NumPy under the GIL: use
    worker processes)"""
    prefetch: int = 16
    """grain read-ahead buffer of each process, in samples"""

    def __post_init__(self):
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise ValueError(f"--negative-fraction must be in [0, 1], got "
                             f"{self.negative_fraction}")
        if self.num_workers < 0 or self.num_threads < 1 or self.prefetch < 0:
            raise ValueError(f"--num-workers and --prefetch must be >= 0 and --num-threads >= 1, "
                             f"got {self.num_workers}, {self.prefetch}, {self.num_threads}")


class TrainTransform(grain.transforms.RandomMap):
    """Slice record (original frame) → one training sample (see :func:`sample.class_sample`).

    Output: ``image`` (S, S, 3) float32 input frame, ``class_id`` int32, ``mask`` (L, L) float32
    low-res frame, ``box`` (4,) float32 input frame, ``dist`` (L, L) float32 low-res frame, and the
    metadata ``case_id`` (str), ``slice_index`` int32, ``flips`` (2,) bool (horizontal, vertical),
    ``variant`` int32 (the augmented variant, 0 without augmentation). ``config``: what a
    sample holds and how it is varied; ``images=False`` leaves ``image`` out; ``num_classes``,
    ``seed`` and ``grid`` as :func:`train_dataset`'s. ``classes_per_step="all"``: ``class_id``
    (K,), ``mask``/``dist`` (K, L, L), ``box`` (K, 4) and ``present`` (K,) bool
    (:func:`sample.slice_sample`).
    """

    def __init__(self, frame: FrameConfig, low_res: int,
                 config: PipelineConfig = PipelineConfig(), *, images: bool = True,
                 num_classes: int = 0, seed: int = 0, grid: int = 0):
        self.frame, self.low_res, self.config = frame, low_res, config
        self.images, self.num_classes, self.seed, self.grid = images, num_classes, seed, grid
        if (config.classes_per_step == "all" or config.negatives) and num_classes < 1:
            raise ValueError("all classes per slice and negatives need num_classes >= 1")

    def random_map(self, record: Record, rng: np.random.Generator) -> Record:
        cfg = self.config
        one = cfg.classes_per_step == "one"
        image, label = record["image"], record["label"]
        case, z = as_text(record["case_id"]), int(record["slice_index"])
        # Without the extensions the draws are the paper's (class, flips, jitter, in that
        # order), so such a run sees exactly the samples it always did.
        if one:
            classes = present_classes(label)
            absent = np.setdiff1d(np.arange(1, self.num_classes + 1), classes)
            if cfg.negatives and absent.size and (classes.size == 0
                                                  or rng.random() < cfg.negative_fraction):
                class_id = int(rng.choice(absent))
            elif classes.size == 0:
                raise ValueError(f"slice {z} of {case!r} has no foreground; one-class training "
                                 "without negatives uses only slices with foreground")
            else:
                class_id = int(rng.choice(classes))
        flips = rng.random(2) < 0.5 if cfg.flips else np.zeros(2, bool)
        variant = int(rng.integers(0, cfg.augment.variants + 1)) if cfg.augment.variants else 0
        # augment → flip → preprocess, as the embedding cache makes its images
        x, label, variant = training_view(
            image, label, self.frame, spacing=pixel_spacing(record), case_id=case,
            slice_index=z, variant=variant, flips=flips,
            augment=cfg.augment, seed=self.seed,
            keep_class=class_id if one else None, preprocess=self.images)
        jitter = rng if cfg.box_jitter else None
        if one:
            out = class_sample(None, label, class_id, self.frame, self.low_res, jitter)
            out["class_id"] = np.int32(class_id)
            if cfg.negatives:
                out["present"] = np.bool_(out["mask"].any())
        else:
            out = slice_sample(None, label, self.num_classes, self.frame, self.low_res, jitter)
        if x is not None:
            out = {"image": x, **out}
        if self.grid:
            out["grid_label"] = grid_labels(label, self.frame, self.grid)
        out.update(case_id=case, slice_index=np.int32(z), flips=flips, variant=np.int32(variant))
        return out


def train_dataset(source: Sequence[Record], frame: FrameConfig, low_res: int = 256,
                  config: PipelineConfig = PipelineConfig(), *, batch_size: int, seed: int = 0,
                  num_epochs: int | None = None, images: bool = True, num_classes: int = 0,
                  grid: int = 0, shard: grain.sharding.ShardOptions | None = None
                  ) -> grain.IterDataset:
    """Infinite (or ``num_epochs``, each reshuffled) stream of this process's training batches.

    ``batch_size`` is per process (the global batch / number of processes); ``seed`` drives the
    shuffle and every per-sample draw; ``images=False`` leaves the input-frame ``image`` out
    (training from cached embeddings: the batch then carries the class, targets and the cache
    key); ``num_classes`` K is needed by ``classes_per_step="all"`` and ``negatives``; with
    ``grid`` g > 0 every sample also carries ``grid_label`` (g, g) int32, all of the slice's
    class ids at the image-embedding grid (the localiser's target), after the same augmentation
    and flips. ``shard``: this process's share, default ``ShardByJaxProcess``; with
    ``drop_remainder`` (the default) and finite epochs every process gets the same number of
    samples, so multi-host steps stay in lockstep.

    A batch is a dict of numpy arrays: ``image`` (B, S, S, 3) float32 input frame, ``class_id``
    (B,) int32, ``mask`` (B, L, L) float32 low-res frame, ``box`` (B, 4) float32 input frame,
    ``dist`` (B, L, L) float32, ``case_id`` (B,) str, ``slice_index`` (B,) int32, ``flips``
    (B, 2) bool (:class:`TrainTransform`). Iterate with ``it = iter(ds)``;
    ``it.get_state()`` / ``it.set_state(state)`` save and restore the position.
    """
    shard = shard or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(num_epochs)
    ds = ds.random_map(TrainTransform(frame, low_res, config, images=images,
                                      num_classes=num_classes, seed=seed, grid=grid), seed=seed)
    if shard.drop_remainder and num_epochs is not None:
        ds = ds[:len(ds) - len(ds) % shard.shard_count]
    ds = ds[shard.shard_index::shard.shard_count]
    ds = ds.batch(batch_size, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.num_threads,
                                              prefetch_buffer_size=config.prefetch))
    if config.num_workers > 0:
        # grain's worker processes read absl flags; outside an absl app they are unparsed, which
        # grain turns into an error. Use the defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.num_workers))
    return it


class SliceSubset(Sequence):
    """The records ``indices`` of a random-access source, as a source itself."""

    def __init__(self, source: Sequence[Record], indices: Sequence[int]):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Record:
        return self.source[self.indices[i]]


def foreground_slices(source: Sequence[Record]) -> SliceSubset:
    """The slices of ``source`` holding at least one class (the paper trains only on those;
    reads every label once)."""
    return SliceSubset(source, [i for i in range(len(source)) if source[i]["label"].any()])


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Optimizer steps that make one pass over ``num_examples`` slices (last partial batch dropped)."""
    return num_examples // global_batch_size


class EvalTransform(grain.transforms.Map):
    """Slice record → evaluation record (see :func:`eval_dataset`)."""

    def __init__(self, frame: FrameConfig):
        self.frame = frame

    def map(self, record: Record) -> Record:
        return {**model_input(record["image"], self.frame, pixel_spacing(record)),
                "label": record["label"],
                "classes": present_classes(record["label"]), "case_id": as_text(record["case_id"]),
                "slice_index": int(record["slice_index"]), "depth": int(record["depth"]),
                "spacing": record["spacing"]}


def eval_dataset(source: Sequence[Record], frame: FrameConfig) -> grain.MapDataset:
    """Every slice of a split, in stored order (case by case, z ascending), one record each:

    ``image`` (S, S, 3) float32 input frame; ``label`` (H, W) uint8 class ids, original frame;
    ``classes`` int32 ids present in the slice; ``case_id`` str; ``slice_index`` and ``depth``
    (slice z and number of slices of the case, to rebuild volumes); ``spacing`` (3,) float32
    (z, y, x) mm; ``original_size`` and ``resized_size`` (h, w): with them
    ``preprocess.Resized(original_size, resized_size)`` maps logits back to the original frame.
    Not batched (original sizes differ); iterate it directly or with ``.to_iter_dataset()``.
    """
    return grain.MapDataset.source(source).map(EvalTransform(frame))


def as_text(value: bytes | str) -> str:
    """A record's text feature (``case_id``: bytes when read back from tfds) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
