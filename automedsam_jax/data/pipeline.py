"""grain input pipelines: training batches and per-slice evaluation records.

Both read a random-access source of slice records (``builder.as_data_source(split)``, see
:mod:`.builder`) and apply the frame-specific preprocessing of :mod:`.sample` on the fly, so one
built dataset serves the 1024 (SAM/MedSAM) and 256 (LiteMedSAM) frames.

Training (:func:`train_dataset`): global shuffle (reshuffled every epoch) → per-sample random
transform (one class present in the slice, chosen at random — or every class 1..K of the slice,
``classes="all"``; an optional augmented variant of the slice, :mod:`.augment`; random
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
from .augment import AugmentConfig, augment_slice
from .labels import present_classes
from .sample import class_sample, flip, grid_labels, slice_sample

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Training pipeline options.

    batch_size:  per-process batch (global batch / number of processes).
    seed:        shuffle and augmentation seed.
    num_epochs:  ``None`` repeats forever; epochs are reshuffled.
    flips:       random horizontal and vertical flips (p = 0.5 each).
    box_jitter:  move each box side outwards by 0..J px (J = 20 at 1024, 5 at 256).
    images:      emit the input-frame ``image``; False when training from cached embeddings
                 (the batch then carries only the class, targets and the cache key).
    classes:     ``"one"``: one class present in the slice, chosen at random (the paper);
                 ``"all"``: every class 1..``num_classes`` of the slice, absent ones with empty
                 targets and ``present`` False (see :func:`.sample.slice_sample`).
    num_classes: K, for ``classes="all"`` and ``negatives``.
    negatives:   ``classes="one"``: with probability ``negative_fraction`` (always, on a slice
                 without foreground) the class is one absent from the slice, with an empty
                 target; the samples then carry ``present``. (``"all"`` always has them.)
    augment:     augmented variants of each slice (:mod:`.augment`); one is drawn per sample
                 (variant 0 = the slice as stored).
    grid:        with g > 0, every sample also carries ``grid_label`` ``(g, g)`` int32: all of
                 the slice's class ids at the image-embedding grid (the localiser's target,
                 :func:`.sample.grid_labels`), after the same augmentation and flips.
    num_workers: worker processes (0 = in the main process, with ``num_threads`` threads).
    num_threads, prefetch: grain ``ReadOptions`` of each process. The per-sample work is numpy and
                 Pillow under the GIL, so more threads do not help; use worker processes.
    shard:       this process's share; default ``ShardByJaxProcess`` (jax.process_index/count).
                 With ``drop_remainder`` (the default) and finite epochs every process gets the
                 same number of samples, so multi-host steps stay in lockstep.
    """

    batch_size: int = 16
    seed: int = 0
    num_epochs: int | None = None
    flips: bool = True
    box_jitter: bool = True
    images: bool = True
    classes: Literal["one", "all"] = "one"
    num_classes: int = 0
    negatives: bool = False
    negative_fraction: float = 0.25
    augment: AugmentConfig = AugmentConfig()
    grid: int = 0
    num_workers: int = 0
    num_threads: int = 1
    prefetch: int = 16
    shard: grain.sharding.ShardOptions | None = None


class TrainTransform(grain.transforms.RandomMap):
    """Slice record (original frame) → one training sample (see :func:`sample.class_sample`).

    Output: ``image`` (S, S, 3) float32 input frame, ``class_id`` int32, ``mask`` (L, L) float32
    low-res frame, ``box`` (4,) float32 input frame, ``dist`` (L, L) float32 low-res frame, and the
    metadata ``case_id`` (str), ``slice_index`` int32, ``flips`` (2,) bool (horizontal, vertical),
    ``variant`` int32 (the augmented variant, 0 without augmentation). ``images=False`` leaves
    ``image`` out. ``classes="all"``: ``class_id`` (K,), ``mask``/``dist`` (K, L, L), ``box``
    (K, 4) and ``present`` (K,) bool (:func:`sample.slice_sample`).
    """

    def __init__(self, frame: FrameConfig, low_res: int, flips: bool, box_jitter: bool,
                 images: bool = True, classes: str = "one", num_classes: int = 0,
                 augment: AugmentConfig = AugmentConfig(), seed: int = 0,
                 negatives: bool = False, negative_fraction: float = 0.25, grid: int = 0):
        self.frame, self.low_res, self.flips, self.box_jitter = frame, low_res, flips, box_jitter
        self.images, self.classes, self.num_classes = images, classes, num_classes
        self.augment, self.seed = augment, seed
        self.negatives, self.negative_fraction = negatives, negative_fraction
        self.grid = grid
        if (classes == "all" or negatives) and num_classes < 1:
            raise ValueError("all classes per slice and negatives need num_classes >= 1")

    def random_map(self, record: Record, rng: np.random.Generator) -> Record:
        image, label = record["image"], record["label"]
        case, z = as_text(record["case_id"]), int(record["slice_index"])
        # Without the extensions the draws are the paper's (class, flips, jitter, in that
        # order), so such a run sees exactly the samples it always did.
        if self.classes == "one":
            classes = present_classes(label)
            absent = np.setdiff1d(np.arange(1, self.num_classes + 1), classes)
            if self.negatives and absent.size and (classes.size == 0
                                                   or rng.random() < self.negative_fraction):
                class_id = int(rng.choice(absent))
            elif classes.size == 0:
                raise ValueError(f"slice {z} of {case!r} has no foreground; one-class training "
                                 "without negatives uses only slices with foreground")
            else:
                class_id = int(rng.choice(classes))
        flips = rng.random(2) < 0.5 if self.flips else np.zeros(2, bool)
        variant = int(rng.integers(0, self.augment.variants + 1)) if self.augment.variants else 0
        if variant:
            aug_image, aug_label = augment_slice(image, label, self.augment, self.seed, case, z,
                                                 variant)
            if self.classes == "one" and (label == class_id).any() \
                    and not (aug_label == class_id).any():
                variant = 0  # the zoom cropped the chosen class away: use the stored slice
            else:
                image, label = aug_image, aug_label
        image, label = flip(image, *flips), flip(label, *flips)
        jitter = rng if self.box_jitter else None
        if self.classes == "one":
            out = class_sample(image if self.images else None, label, class_id, self.frame,
                               self.low_res, jitter)
            out["class_id"] = np.int32(class_id)
            if self.negatives:
                out["present"] = np.bool_(out["mask"].any())
        else:
            out = slice_sample(image if self.images else None, label, self.num_classes,
                               self.frame, self.low_res, jitter)
        if self.grid:
            out["grid_label"] = grid_labels(label, self.frame, self.grid)
        out.update(case_id=case, slice_index=np.int32(z), flips=flips, variant=np.int32(variant))
        return out


def train_dataset(source: Sequence[Record], frame: FrameConfig, low_res: int = 256,
                  config: PipelineConfig = PipelineConfig()) -> grain.IterDataset:
    """Infinite (or ``config.num_epochs``) stream of training batches of this process.

    A batch is a dict of numpy arrays: ``image`` (B, S, S, 3) float32 (unless
    ``config.images`` is False), ``class_id`` (B,) int32,
    ``mask`` (B, L, L) float32, ``box`` (B, 4) float32, ``dist`` (B, L, L) float32, ``case_id``
    (B,) str, ``slice_index`` (B,) int32, ``flips`` (B, 2) bool. Iterate with ``it = iter(ds)``;
    ``it.get_state()`` / ``it.set_state(state)`` save and restore the position.
    """
    shard = config.shard or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    ds = grain.MapDataset.source(source).shuffle(seed=config.seed).repeat(config.num_epochs)
    ds = ds.random_map(TrainTransform(frame, low_res, config.flips, config.box_jitter,
                                      config.images, config.classes, config.num_classes,
                                      config.augment, config.seed, config.negatives,
                                      config.negative_fraction, config.grid),
                       seed=config.seed)
    if shard.drop_remainder and config.num_epochs is not None:
        ds = ds[:len(ds) - len(ds) % shard.shard_count]
    ds = ds[shard.shard_index::shard.shard_count]
    ds = ds.batch(config.batch_size, drop_remainder=True)
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
        return {**model_input(record["image"], self.frame), "label": record["label"],
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
