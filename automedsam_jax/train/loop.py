"""The training run, phase by phase: :func:`setup` (processes, work directory) →
:func:`open_data` (the dataset, steps) → :func:`build_model` → :func:`init_trainer` (optimizer,
sharded state, the jitted step) → :func:`train_pipeline` and :func:`build_cache` → :func:`train`
(epochs, the plateau scheduler, checkpoints, SIGTERM, NaN guard, logging, ``best/``) →
:func:`export` (``final/``) → :func:`finish` (presence calibration and validation).
:func:`run` chains them.

Restarting with the same ``workdir`` resumes from the latest checkpoint (parameters, optimizer,
step, scheduler, PRNG key and the exact position of the grain iterator: :class:`Progress`), so
an interrupted run ends with the parameters of an uninterrupted one. What goes where in the work
directory is :mod:`automedsam_jax.io.rundir`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.experimental import multihost_utils
from simple_parsing.helpers.serialization import to_dict

from ..core.automedsam import AutoMedSAM
from ..core.backend import backend_options
from ..core.config import AutoMedSamConfig, SamConfig
from ..core.distributed import maybe_initialize_distributed, to_host
from ..core.init import random_model
from ..core.losses import LossWeights
from ..core.flops import lowered_flops, mfu, peak_tflops
from ..core.pipelining import dispatch_ahead
from ..core.routes import get_route, model_config
from ..data import prepare, steps_per_epoch, train_dataset
from ..data.custom import dataset_name
from ..data.embedding_cache import CacheSpec, EmbeddingCache
from ..data.pipeline import foreground_slices
from ..io import rundir
from ..io.checkpoint import (CONFIG_FILE, load_config, load_model, pretrained_automedsam,
                             save_model, update_meta)
from ..io.errors import UsageError
from ..io.paths import AnyPath, as_path, is_url, local_dir, write_atomic
from ..io.rundir import WorkdirLock
from ..io.staging import local_data_dir, stage_in, stage_out
from ..io.weights import pretrained_litemedsam
from .checkpointing import Checkpoints, key_from_json, key_to_json
from .config import TrainConfig, to_json
from .optim import OptimConfig, Trainee, adamw
from .logging import Logger
from .step import (data_mesh, init_state, learning_rate, make_embed_fn, make_train_step,
                   set_learning_rate, shard_batch)
from .validation import ValidationSplit, calibrate_presence, validate

BATCHES_AHEAD = 2  # batches whose host→device copies run ahead of the step


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left as it was."""


# -- setup ------------------------------------------------------------------------------------
def setup(cfg: TrainConfig) -> tuple[AnyPath, WorkdirLock | None]:
    """Join the other processes (if any); check the batch against the devices and the weights;
    take the work directory (process 0 holds its lock until the process ends). :func:`run`
    records ``cfg`` in it once the data and the model are ready."""
    maybe_initialize_distributed(cfg.run.distributed)
    cfg.xla.apply()
    if cfg.optim.batch_size % jax.device_count():
        raise UsageError(f"--batch-size {cfg.optim.batch_size} must be a multiple of the device "
                         f"count {jax.device_count()}")
    check_weights(cfg)
    if cfg.cache.cache_dir:
        local_dir(cfg.cache.cache_dir, "--cache-dir")
    workdir = as_path(cfg.run.workdir, absolute=True)
    lock = WorkdirLock.acquire(workdir) if jax.process_index() == 0 else None
    return workdir, lock


# -- data -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunData:
    """The prepared dataset: its builder (for the validation split), class names, the training
    slices the run draws from, and the run's length."""

    builder: Any
    class_names: list[str]
    train: Sequence[dict]
    steps_per_epoch: int
    total_steps: int


def open_data(cfg: TrainConfig) -> RunData:
    """Prepare ``cfg.data.dataset`` (process 0 builds, the others then open it) and size the run.
    A URL ``--data-dir`` is read from this host's mirror of it (:mod:`automedsam_jax.io.staging`):
    downloaded first, and a dataset process 0 builds there is uploaded for the others."""
    url = cfg.data.data_dir

    def build():
        local = stage_in(url)
        builder = prepare(cfg.data.dataset, local, manual_dir=cfg.data.manual_dir)
        if is_url(url) and jax.process_index() == 0 and stage_out(local, url, builder.data_dir):
            print(f"dataset uploaded to {url}", flush=True)
        return builder

    if jax.process_count() == 1:
        builder = build()
    else:  # process 0 builds; the others open the built dataset (shared or per-host disk)
        builder = build() if jax.process_index() == 0 else None
        multihost_utils.sync_global_devices("automedsam_jax: dataset prepared")
        builder = builder or build()
    train_src = builder.as_data_source("train")
    if builder.info.metadata.get("train_empty_slices") and not cfg.pipeline.negatives:
        train_src = foreground_slices(train_src)  # organ-free slices serve only as negatives
    spe = steps_per_epoch(len(train_src), cfg.optim.batch_size)
    if spe == 0:
        raise UsageError(f"{len(train_src)} training slices < batch size {cfg.optim.batch_size}")
    total = cfg.optim.epochs * spe
    if cfg.optim.max_steps:
        total = min(total, cfg.optim.max_steps)
    return RunData(builder, list(builder.info.metadata["class_names"]), train_src, spe, total)


# -- model ------------------------------------------------------------------------------------
def check_weights(cfg: TrainConfig) -> None:
    """``cfg.model.weights`` that cannot work (see :func:`build_model`): :class:`UsageError`,
    before anything is loaded or written."""
    weights = cfg.model.weights
    if weights == "pretrained" and cfg.model.backbone != "litemedsam":
        raise UsageError("--weights pretrained is LiteMedSAM only; convert MedSAM/SAM with "
                         "`python -m convert SRC.pth DIR` and pass --weights DIR")
    if not weights:
        raise UsageError(f"--weights is required for backbone {cfg.model.backbone!r} (a "
                         "directory made by `python -m convert`)")
    if weights in ("random", "pretrained"):
        return
    directory = as_path(weights)
    if not (directory / CONFIG_FILE).is_file():
        raise UsageError(f"--weights {weights}: not a converted model directory (no "
                         f"{CONFIG_FILE}); make one with `python -m convert SRC.pth DIR`, or "
                         "pass pretrained (LiteMedSAM) or random")
    try:
        found = load_config(directory)
    except ValueError as e:  # unreadable JSON, or no model described
        raise UsageError(f"--weights {weights}: {e}") from None
    if not isinstance(found, SamConfig):
        raise UsageError(f"--weights {weights} holds an AutoMedSAM, not a converted "
                         "MedSAM/LiteMedSAM backbone (`python -m convert SRC.pth DIR` makes one)")
    if found != SamConfig.preset(cfg.model.backbone):
        raise UsageError(f"--weights {weights} holds {found.name!r}, not --backbone "
                         f"{cfg.model.backbone!r}")


def build_model(cfg: TrainConfig, num_classes: int) -> AutoMedSAM:
    """``cfg.model.weights``: a converted backbone directory, ``pretrained`` (LiteMedSAM via pip) or
    ``random``; the parts of the prompt route ``cfg.model.prompt`` are new
    (:meth:`AutoMedSAM.from_sam`), sized for ``num_classes``."""
    check_weights(cfg)
    sam = SamConfig.preset(cfg.model.backbone).with_spacing(cfg.model.input_spacing or None)
    model_cfg = model_config(sam, cfg.model.prompt, *sized_parts(cfg.model, num_classes))
    if cfg.model.weights == "random":
        return random_model(model_cfg, cfg.run.seed)
    weights = cfg.model.weights
    if weights == "pretrained":
        weights = pretrained_litemedsam()
    return pretrained_automedsam(weights, model_cfg.class_prompt, cfg.run.seed,
                                 model_cfg.localiser, model_cfg.prompt,
                                 cfg.model.input_spacing or None)


def sized_parts(model_cfg, num_classes: int):
    """The class prompt encoder's and localiser's configs with the dataset's K filled in."""
    class_prompt = model_cfg.class_prompt
    if class_prompt.class_embedding == "learned":
        class_prompt = dataclasses.replace(class_prompt, num_classes=num_classes)
    return class_prompt, dataclasses.replace(model_cfg.localiser, num_classes=num_classes)


# -- state ------------------------------------------------------------------------------------
def make_tx(cfg: OptimConfig, total_steps: int = 0) -> optax.GradientTransformation:
    """AdamW with the learning rate in its state (``inject_hyperparams``): a constant the plateau
    scheduler lowers, or ``cfg.lr_schedule == "cosine"``: ``lr → 0`` over ``total_steps``."""
    lr = cfg.lr
    if cfg.lr_schedule == "cosine":
        if total_steps <= 0:
            raise ValueError("the cosine schedule needs the run's total number of steps")
        lr = optax.cosine_decay_schedule(cfg.lr, total_steps)
    return optax.inject_hyperparams(adamw)(learning_rate=lr, b1=cfg.b1, b2=cfg.b2,
                                           eps=cfg.eps, weight_decay=cfg.weight_decay)


@dataclasses.dataclass
class Trainer:
    """The replicated training ``state`` (trained parameters, optimizer, step), the ``frozen``
    variables, and the jitted ``step_fn(state, frozen, batch, key)`` on ``mesh``."""

    graphdef: Any
    state: dict
    frozen: Any
    step_fn: Callable
    mesh: jax.sharding.Mesh
    encoder_dtype: Any

    def model(self) -> AutoMedSAM:
        """The current model, on the host."""
        return nnx.merge(self.graphdef, to_host(self.state["params"]),
                         to_host(self.frozen)).model


def init_trainer(cfg: TrainConfig, model: AutoMedSAM, total_steps: int) -> Trainer:
    """Split ``model`` and the loss σ's into trained and frozen variables, replicate them on a
    data mesh of every device, and compile nothing yet (the step is jitted lazily)."""
    tx = make_tx(cfg.optim, total_steps)
    mesh = data_mesh()
    state, frozen, graphdef = init_state(
        Trainee(model, LossWeights(cfg.loss), cfg.model.train_decoder), tx, mesh)
    enc_dtype = jnp.bfloat16 if cfg.model.encoder_dtype == "bfloat16" else jnp.float32
    step_fn = make_train_step(graphdef, tx, mesh, cached=cfg.cache.cache_embeddings,
                              encoder_dtype=enc_dtype, negatives=cfg.pipeline.negatives)
    return Trainer(graphdef, state, frozen, step_fn, mesh, enc_dtype)


@dataclasses.dataclass
class Progress:
    """Where the run is, saved with every checkpoint (as JSON): the step, the running epoch
    loss, past epoch losses, the plateau scheduler, the best epoch loss, the best validation
    mean DSC and the ``[step, mean DSC]`` curve (``eval_every``), the base PRNG key and the
    grain iterator state after the last batch trained on."""

    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_steps: int = 0
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    plateau: dict = dataclasses.field(default_factory=lambda: {"best": math.inf,
                                                               "bad_epochs": 0})
    best_loss: float = math.inf
    best_validation: float = -math.inf
    validation_curve: list[list[float]] = dataclasses.field(default_factory=list)
    key: list[int] | None = None
    data: Any = None

    @classmethod
    def start(cls, seed: int) -> "Progress":
        return cls(key=key_to_json(jax.random.key(seed)))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, meta: dict) -> "Progress":
        return cls(**meta)

    def add_step(self, loss: float) -> None:
        self.step += 1
        self.epoch_loss_sum += loss
        self.epoch_steps += 1

    def end_epoch(self) -> float:
        """Close the epoch: its mean loss, recorded and returned."""
        epoch_loss = self.epoch_loss_sum / self.epoch_steps
        self.epoch_losses.append(epoch_loss)
        self.epoch_loss_sum, self.epoch_steps = 0.0, 0
        return epoch_loss


def plateau_update(plateau: dict, epoch_loss: float, cfg: OptimConfig) -> bool:
    """ReduceLROnPlateau(mode=min, factor, patience, cooldown=0, threshold=0). True: reduce."""
    if epoch_loss < plateau["best"]:
        plateau["best"], plateau["bad_epochs"] = epoch_loss, 0
        return False
    plateau["bad_epochs"] += 1
    if plateau["bad_epochs"] >= cfg.plateau_patience:
        plateau["bad_epochs"] = 0
        return True
    return False


# -- input ------------------------------------------------------------------------------------
def train_pipeline(cfg: TrainConfig, data: RunData, model_cfg: AutoMedSamConfig):
    """This process's grain dataset of training batches."""
    sam = model_cfg.sam
    return train_dataset(data.train, sam.frame, sam.low_res_size, cfg.pipeline,
                         batch_size=cfg.optim.batch_size // jax.process_count(),
                         seed=cfg.run.seed, num_epochs=cfg.optim.epochs,
                         images=not cfg.cache.cache_embeddings,
                         num_classes=len(data.class_names),
                         grid=sam.embedding_size if get_route(model_cfg.prompt).grid_labels
                         else 0)


def build_cache(cfg: TrainConfig, data: RunData, trainer: Trainer, model: AutoMedSAM,
                log: Callable[[str], None]) -> EmbeddingCache:
    """Every training slice's embeddings (each flip and augmentation variant) on disk under
    ``cfg.cache.cache_dir`` (default ``<data_dir>/embeddings``): reused when a cache of the same
    inputs is there, else embedded once on the data mesh, each process its share."""
    embed = make_embed_fn(trainer.graphdef, trainer.mesh, trainer.encoder_dtype)
    sharding = jax.sharding.NamedSharding(trainer.mesh, jax.sharding.PartitionSpec("data"))
    local = max(1, 8 // jax.device_count()) * jax.local_device_count()  # images per process
    spec = CacheSpec.of(model, f"{data.builder.info.full_name}/train", len(data.train),
                        encoder_dtype=cfg.model.encoder_dtype, flips=cfg.pipeline.flips,
                        augment=cfg.pipeline.augment, seed=cfg.run.seed,
                        dtype=cfg.cache.cache_dtype)
    directory = Path(cfg.cache.cache_dir or local_data_dir(cfg.data.data_dir) / "embeddings"
                     ).expanduser()
    return EmbeddingCache.open_or_build(
        directory, spec, data.train, model.config.sam.frame,
        lambda x: embed(trainer.state["params"], trainer.frozen,
                        jax.make_array_from_process_local_data(sharding, x)),
        chunk=local, log=log, barrier=multihost_utils.sync_global_devices)


# -- loop -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Throughput:
    """Training images per second over the steps of an epoch (input, step and loss read back),
    without the first step of the process (it compiles the step) and without what runs between
    steps (checkpoints, validation); and the model FLOPs utilisation of those steps
    (:mod:`automedsam_jax.core.flops`: XLA's FLOPs of the step over the devices' peak; None
    where either is unknown, e.g. on a CPU)."""

    batch_size: int
    devices: int
    flops: float | None = None
    """FLOPs of one step (the global batch's)"""
    dtype: str = "float32"
    """the compute dtype whose peak MFU is taken against"""
    peak: float | None = None
    """one device's peak TFLOP/s, overriding the table (``--peak-tflops``)"""
    seconds: float = 0.0
    steps: int = 0
    first: bool = True

    def add(self, seconds: float) -> tuple[float, float | None]:
        """Count one step; → its own (img/s, MFU) ((0, None) for the compiling step)."""
        if self.first:
            self.first = False
            return 0.0, None
        self.seconds += seconds
        self.steps += 1
        return self.batch_size / max(seconds, 1e-9), mfu(self.flops, seconds, self.dtype,
                                                         peak_per_device=self.peak)

    def epoch(self) -> str:
        """``"X img/s (Y per device, N device(s)), MFU Z %"`` since the last call (no MFU part
        where it is unknown)."""
        if not self.steps:
            return "img/s: only the compiling step so far"
        ips = self.steps * self.batch_size / self.seconds
        util = mfu(self.flops, self.seconds / self.steps, self.dtype, peak_per_device=self.peak)
        self.seconds, self.steps = 0.0, 0
        return (f"{ips:.2f} img/s ({ips / self.devices:.2f} per device, {self.devices} "
                f"device(s))" + ("" if util is None else f", MFU {100 * util:.1f} %"))


def flops_line(flops: float | None, dtype: str, devices=None, peak: float | None = None) -> str:
    """What the log says once about the step's FLOPs and the peak MFU is taken against
    (``peak``: one device's TFLOP/s given, else the table's)."""
    devices = jax.devices() if devices is None else list(devices)
    kind = devices[0].device_kind
    if flops is None:
        return "one training step: no MFU (XLA gives no cost analysis here)"
    source = "--peak-tflops" if peak else f"{dtype} dense peak"
    peak = peak or peak_tflops(kind, dtype)
    against = (f"MFU against {len(devices)} × {peak:g} TFLOP/s ({kind}, {source})"
               if peak else f"no MFU: no peak FLOP/s known for {kind!r} (give --peak-tflops)")
    return f"one training step: {flops / 1e9:.3g} GFLOP (XLA's cost analysis); {against}"


def step_flops(trainer: Trainer, batch, key) -> float | None:
    """XLA's FLOPs of one training step on ``batch`` (lowered again, not compiled: the jitted
    step's own compilation is the one that runs)."""
    return lowered_flops(trainer.step_fn.lower(trainer.state, trainer.frozen, batch, key))


def train(cfg: TrainConfig, data: RunData, trainer: Trainer, progress: Progress, it,
          cache: EmbeddingCache | None, ckpts: Checkpoints, log: Logger,
          on_best: Callable[[], None], on_validate: Callable[[int], None]) -> None:
    """Train from ``progress.step`` to ``data.total_steps``, reading batches from the grain
    iterator ``it``; checkpoints at each epoch end (and every ``cfg.run.checkpoint_every`` steps);
    ``on_best()`` when an epoch's loss is the lowest yet, ``on_validate(step)`` every
    ``cfg.run.eval_every`` epochs and after the last step. SIGTERM: checkpoint and exit 143.
    Non-finite loss: :class:`TrainingDiverged`, the last checkpoint untouched."""
    stop = {"sigterm": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

    def save():
        if ckpts.latest_step() != progress.step:
            ckpts.save(progress.step, trainer.state, progress.to_json())

    def host_batches():
        """This process's batches, each with the iterator state just after it."""
        for batch in it:
            if cache is not None:
                batch["embedding"] = cache.lookup(batch)
            yield batch, it.get_state()

    # Device copies run BATCHES_AHEAD batches ahead; a checkpoint stores the iterator state
    # after the last batch *trained on*, so a resumed run reads exactly the batches that follow
    # it.
    batches = dispatch_ahead(host_batches(), lambda b: (
        shard_batch(b[0], trainer.mesh, cfg.cache.cache_embeddings), b[1]), size=BATCHES_AHEAD)
    key = key_from_json(progress.key)
    spe, total = data.steps_per_epoch, data.total_steps
    bf16 = cfg.model.encoder_dtype == "bfloat16" and not cfg.cache.cache_embeddings
    rate = Throughput(cfg.optim.batch_size, jax.device_count(),
                      dtype="bfloat16" if bf16 else "float32", peak=cfg.run.peak_tflops or None)
    while progress.step < total:
        t0 = time.perf_counter()
        batch, data_state = next(batches)
        if rate.first:
            rate.flops = step_flops(trainer, batch, key)
            log.info(flops_line(rate.flops, rate.dtype, peak=rate.peak))
            t0 = time.perf_counter()
        trainer.state, metrics = trainer.step_fn(trainer.state, trainer.frozen, batch, key)
        scalars = {k: float(v) for k, v in to_host(metrics).items()}
        ips, util = rate.add(time.perf_counter() - t0)
        if not all(math.isfinite(v) for v in scalars.values()):
            last = ckpts.latest_step()
            kept = (f"the last good checkpoint (step {last}) in {ckpts.directory} is untouched"
                    if last is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"non-finite loss at step {progress.step + 1} (loss={scalars['loss']}); "
                f"stopping: {kept}. Try a lower --lr (now {cfg.optim.lr:g}).")
        progress.add_step(scalars["loss"])
        progress.data = data_state
        step = progress.step
        scalars["lr"] = learning_rate(trainer.state)
        log.step(step, scalars, ips, util)
        end_of_epoch = step % spe == 0
        if end_of_epoch:
            epoch, epoch_loss = step // spe, progress.end_epoch()
            if cfg.optim.lr_schedule == "plateau" and plateau_update(progress.plateau, epoch_loss,
                                                                    cfg.optim):
                trainer.state = set_learning_rate(
                    trainer.state, learning_rate(trainer.state) * cfg.optim.plateau_factor)
                log.info(f"epoch {epoch}: no improvement for {cfg.optim.plateau_patience} epochs, "
                         f"lr → {learning_rate(trainer.state):.3g}")
            log.scalars(step, {"epoch_loss": epoch_loss}, "train")
            log.info(f"epoch {epoch}/{cfg.optim.epochs}: loss {epoch_loss:.4f}, "
                     f"lr {learning_rate(trainer.state):.3g}, {rate.epoch()}")
            if epoch_loss < progress.best_loss:
                progress.best_loss = epoch_loss
                on_best()
            if cfg.run.eval_every and (epoch % cfg.run.eval_every == 0 or step == total):
                on_validate(step)
        if end_of_epoch or (cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0) \
                or step == total:
            save()
        if stop["sigterm"]:
            save()
            log.info(f"SIGTERM: checkpoint saved at step {step}; exiting. Re-run the same "
                     "command to resume.")
            raise SystemExit(143)


# -- export -----------------------------------------------------------------------------------
def export(model: AutoMedSAM, workdir: AnyPath, name: str, cfg: TrainConfig,
           class_names: Sequence[str], step: int) -> AnyPath:
    """Write ``workdir/name`` (``best``/``final``): a model directory whose ``config.json`` also
    records the class names, the training config and the step. Every process calls it (Orbax
    synchronises); process 0 writes."""
    return save_model(model, rundir.export_dir(workdir, name), extra={
        rundir.CLASS_NAMES: list(class_names), rundir.TRAIN_CONFIG: to_dict(cfg),
        rundir.STEP: int(step)})


# -- validation -------------------------------------------------------------------------------
def select_on_validation(cfg: TrainConfig, model: AutoMedSAM, data: RunData,
                         split: ValidationSplit, log: Logger, step: int):
    """A validation point of the curve: the presence rule calibrated for ``model`` now
    (``cfg.run.presence``), then validation DSC under it (None without a validation split)."""
    min_area = 0.0
    if cfg.run.presence:
        presence = calibrate_presence(model, split, len(data.class_names), log, f"step {step}")
        min_area = presence["min_area"] if presence else 0.0
    return validate(model, split, data.class_names, log, step, min_area)


def finish(cfg: TrainConfig, workdir: AnyPath, data: RunData, split: ValidationSplit,
           final_model: AutoMedSAM, log: Logger, step: int) -> dict:
    """After the last step: calibrate each export's presence rule (``cfg.run.presence``) and store
    it with the export, validate the final model under its rule; → the summary's entries."""
    summary = {}
    if cfg.run.presence:  # each exported model gets the rule calibrated for it
        for name in rundir.EXPORTS:
            directory = rundir.export_dir(workdir, name)
            if directory.exists():
                model = final_model if name == rundir.FINAL else load_model(directory)
                presence = calibrate_presence(model, split, len(data.class_names), log, name)
                if presence is not None:
                    update_meta(directory, {rundir.PRESENCE: presence})
                    summary[f"presence_{name}"] = presence
    min_area = summary.get(f"presence_{rundir.FINAL}", {}).get("min_area", 0.0)
    ev = validate(final_model, split, data.class_names, log, step, min_area)
    if ev is not None:
        metrics = ev.metrics
        summary["validation"] = {"mean_dsc": metrics.dsc, "mean_nsd": metrics.nsd, "per_class": {
            data.class_names[c - 1]: {"dsc": s.dsc, "nsd": s.nsd}
            for c, s in metrics.per_class.items()}, "presence": ev.presence.to_dict()}
    return summary


# -- the run ----------------------------------------------------------------------------------
def run(cfg: TrainConfig) -> dict:
    """Train (or resume) per ``cfg``; returns a summary dict (also written to workdir)."""
    workdir, lock = setup(cfg)
    started = False
    try:
        with backend_options(cfg.run.cpu_rewrites, cfg.run.attention):
            # The data and the model first: a run refused here (no usable data, fewer slices
            # than a batch, weights of another backbone) leaves the work directory as it was.
            data = open_data(cfg)
            model = build_model(cfg, len(data.class_names))
            if lock is not None:
                write_atomic(workdir / rundir.TRAIN_CONFIG_FILE, to_json(cfg))
            started = True
            return _run(cfg, workdir, data, model)
    finally:
        if lock is not None:
            lock.release(undo=not started)


def _run(cfg: TrainConfig, workdir: AnyPath, data: RunData, model: AutoMedSAM) -> dict:
    trainer = init_trainer(cfg, model, data.total_steps)
    ckpts = Checkpoints(workdir / rundir.CHECKPOINTS_DIR, cfg.run.keep_checkpoints)
    progress = Progress.start(cfg.run.seed)
    it = iter(train_pipeline(cfg, data, model.config))
    if ckpts.latest_step() is not None:
        trainer.state, meta = ckpts.restore(trainer.state)
        progress = Progress.from_json(meta)
        it.set_state(progress.data)
    start = progress.step
    log = Logger(str(workdir / rundir.TENSORBOARD_DIR), data.total_steps, start, cfg.run.progress)
    mc = model.config
    parts = "; ".join(f"{name} {dataclasses.asdict(getattr(mc, name))}"
                      for name in ("class_prompt", "localiser") if getattr(mc, name))
    composed = " + ".join(cfg.composed) or "the fields' defaults"
    log.info(f"{dataset_name(cfg.data.dataset)}: {len(data.train)} training slices, "
             f"{data.steps_per_epoch} steps/epoch, {cfg.optim.epochs} epochs, global batch "
             f"{cfg.optim.batch_size} on {jax.device_count()} device(s); backbone "
             f"{cfg.model.backbone}, lr {cfg.optim.lr:g}, flips {cfg.pipeline.flips}; "
             f"{composed}: {cfg.pipeline.classes_per_step} class(es) per slice, negatives "
             f"{cfg.pipeline.negatives}, {cfg.pipeline.augment.variants} augmented variant(s), "
             f"presence {cfg.run.presence}, prompt {mc.prompt} ({parts}); "
             f"{sum(x.size for x in jax.tree.leaves(trainer.state['params'])):,} trained "
             "parameters"
             + (f"; resuming at step {start}" if start else ""))
    cache = build_cache(cfg, data, trainer, model, log.info) if cfg.cache.cache_embeddings else None

    split = ValidationSplit(data.builder, model.config.sam.frame)
    selects = bool(cfg.run.eval_every) and len(split) > 0

    def on_best():  # without validation during training, best/ = lowest epoch loss
        if not selects:
            export(trainer.model(), workdir, rundir.BEST, cfg, data.class_names, progress.step)

    def on_validate(step):  # with it, best/ = highest validation mean DSC (its own presence rule)
        if not selects:
            return
        current = trainer.model()
        ev = select_on_validation(cfg, current, data, split, log, step)
        if ev is not None:
            progress.validation_curve.append([step, ev.metrics.dsc])
            if ev.metrics.dsc > progress.best_validation:
                progress.best_validation = ev.metrics.dsc
                export(current, workdir, rundir.BEST, cfg, data.class_names, step)

    try:
        train(cfg, data, trainer, progress, it, cache, ckpts, log, on_best, on_validate)
    except (TrainingDiverged, SystemExit):
        log.close()
        ckpts.close()
        raise
    log.info(f"training done: {progress.step} steps")
    final_model = trainer.model()
    export(final_model, workdir, rundir.FINAL, cfg, data.class_names, progress.step)
    summary = {"steps": progress.step, "epoch_losses": progress.epoch_losses,
               "validation_curve": progress.validation_curve,
               **finish(cfg, workdir, data, split, final_model, log, progress.step)}
    if jax.process_index() == 0:
        write_atomic(workdir / rundir.SUMMARY_FILE, json.dumps(summary, indent=2))
    log.close()
    ckpts.close()
    return summary
