"""The training run: data, model, the sharded step, epochs, the plateau scheduler, checkpoints,
SIGTERM, NaN guard, logging, validation and the exported models.

Restarting with the same ``workdir`` resumes from the latest checkpoint (parameters, optimizer,
step, scheduler, PRNG key and the exact position of the grain iterator), so an interrupted run
ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from ..automedsam import AutoMedSAM
from ..checkpoint import load_model, save_model, update_meta
from ..config import AutoMedSamConfig, SamConfig
from ..data import PipelineConfig, SyntheticConfig, prepare, steps_per_epoch, train_dataset
from ..data.augment import AugmentConfig
from ..data.pipeline import foreground_slices
from ..losses import LossWeights
from ..optim import Trainee, adamw
from .checkpointing import Checkpoints, key_from_json, key_to_json
from .config import TrainConfig
from .embedding_cache import EmbeddingCache
from .evaluate import calibrate_presence, evaluate, summary_table
from .init import random_automedsam
from .logging import Logger
from .step import (data_mesh, init_state, learning_rate, make_embed_fn, make_train_step,
                   prefetch, set_learning_rate, shard_batch)

PREFETCH = 2  # batches whose host→device copies run ahead of the step


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left as it was."""


def multi_process_env() -> bool:
    """Whether the environment describes a multi-process job: an explicit coordinator
    (``JAX_COORDINATOR_ADDRESS``), Slurm or Open MPI with several tasks, or a multi-host Cloud
    TPU VM (``TPU_WORKER_HOSTNAMES`` lists several hosts)."""
    env = os.environ
    return ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
            or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def maybe_initialize_distributed(mode: str = "auto") -> None:
    """``jax.distributed.initialize()`` when ``mode`` is ``"on"``, or ``"auto"`` and
    :func:`multi_process_env`. JAX detects TPU, Slurm and Open MPI jobs itself; elsewhere set
    ``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``."""
    if mode == "on" or (mode == "auto" and multi_process_env()):
        env = os.environ
        jax.distributed.initialize(
            num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
            process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)


def to_host(tree):
    """Replicated global arrays → numpy, from this process's first shard (works on several
    hosts, where a global array is not fully addressable)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))
                        if isinstance(x, jax.Array) else x, tree)


def dataset_spec(name: str):
    """A preset name, or ``synthetic:k=v,...`` → :class:`SyntheticConfig`."""
    if not name.startswith("synthetic"):
        return name
    kwargs = {}
    for item in filter(None, name.partition(":")[2].split(",")):
        k, _, v = item.partition("=")
        kwargs[k.strip()] = int(v)
    return SyntheticConfig(**kwargs)


def build_model(cfg: TrainConfig, num_classes: int) -> AutoMedSAM:
    sam = SamConfig.preset(cfg.backbone)
    if cfg.weights == "random":
        return random_automedsam(AutoMedSamConfig(sam, cfg.class_prompt(num_classes)), cfg.seed)
    weights = cfg.weights
    if weights == "pretrained":
        if cfg.backbone != "litemedsam":
            raise ValueError("--weights pretrained is LiteMedSAM only; convert MedSAM/SAM with "
                             "`python -m convert SRC.pth DIR` and pass --weights DIR")
        from ..weights import pretrained_litemedsam
        weights = pretrained_litemedsam()
    if not weights:
        raise ValueError(f"--weights is required for backbone {cfg.backbone!r} (a directory made "
                         "by `python -m convert`)")
    base = load_model(weights)
    if base.config != sam:
        raise ValueError(f"{weights} holds {base.config.name!r}, not --backbone {cfg.backbone!r}")
    return AutoMedSAM.from_sam(base, cfg.class_prompt(num_classes), cfg.seed)


def make_tx(cfg: TrainConfig, total_steps: int = 0) -> optax.GradientTransformation:
    """AdamW with the learning rate in its state (``inject_hyperparams``): a constant the plateau
    scheduler lowers, or ``cfg.lr_schedule == "cosine"``: ``lr → 0`` over ``total_steps``."""
    lr = cfg.lr
    if cfg.lr_schedule == "cosine":
        if total_steps <= 0:
            raise ValueError("the cosine schedule needs the run's total number of steps")
        lr = optax.cosine_decay_schedule(cfg.lr, total_steps)
    return optax.inject_hyperparams(adamw)(learning_rate=lr, b1=cfg.b1, b2=cfg.b2,
                                           eps=cfg.eps, weight_decay=cfg.weight_decay)


def plateau_update(plateau: dict, epoch_loss: float, cfg: TrainConfig) -> bool:
    """ReduceLROnPlateau(mode=min, factor, patience, cooldown=0, threshold=0). True: reduce."""
    if epoch_loss < plateau["best"]:
        plateau["best"], plateau["bad_epochs"] = epoch_loss, 0
        return False
    plateau["bad_epochs"] += 1
    if plateau["bad_epochs"] >= cfg.plateau_patience:
        plateau["bad_epochs"] = 0
        return True
    return False


def run(cfg: TrainConfig) -> dict:
    """Train (or resume) per ``cfg``; returns a summary dict (also written to workdir)."""
    maybe_initialize_distributed(cfg.distributed)
    workdir = Path(cfg.workdir).expanduser().absolute()
    main = jax.process_index() == 0
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    # -- data ------------------------------------------------------------------------------
    def build():
        return prepare(dataset_spec(cfg.dataset), os.path.expanduser(cfg.data_dir),
                       manual_dir=cfg.manual_dir)

    if jax.process_count() == 1:
        builder = build()
    else:  # process 0 builds; the others open the built dataset (shared or per-host disk)
        builder = build() if main else None
        multihost_utils.sync_global_devices("automedsam_jax: dataset prepared")
        builder = builder or build()
    class_names = list(builder.info.metadata["class_names"])
    train_src = builder.as_data_source("train")
    if builder.info.metadata.get("train_empty_slices") and not cfg.negatives:
        train_src = foreground_slices(train_src)  # organ-free slices serve only as negatives
    n_proc = jax.process_count()
    if cfg.batch_size % jax.device_count():
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the device count "
                         f"{jax.device_count()}")
    spe = steps_per_epoch(len(train_src), cfg.batch_size)
    if spe == 0:
        raise ValueError(f"{len(train_src)} training slices < batch size {cfg.batch_size}")
    total = cfg.epochs * spe
    if cfg.max_steps:
        total = min(total, cfg.max_steps)

    # -- model, state, step -----------------------------------------------------------------
    model = build_model(cfg, len(class_names))
    frame = model.config.sam.frame
    trainee = Trainee(model, LossWeights(cfg.loss()))
    tx = make_tx(cfg, total)
    mesh = data_mesh()
    state, frozen, graphdef = init_state(trainee, tx, mesh)
    enc_dtype = jnp.bfloat16 if cfg.encoder_dtype == "bfloat16" else jnp.float32
    step_fn = make_train_step(graphdef, tx, mesh, cached=cfg.cache_embeddings,
                              encoder_dtype=enc_dtype, negatives=cfg.negatives)
    augment = AugmentConfig(variants=cfg.augment)

    ckpts = Checkpoints(workdir / "checkpoints", cfg.keep_checkpoints)
    meta = {"step": 0, "epoch_loss_sum": 0.0, "epoch_steps": 0, "epoch_losses": [],
            "plateau": {"best": math.inf, "bad_epochs": 0}, "best_loss": math.inf,
            "key": key_to_json(jax.random.key(cfg.seed)), "data": None}
    ds = train_dataset(train_src, frame, model.config.sam.low_res_size,
                       PipelineConfig(batch_size=cfg.batch_size // n_proc, seed=cfg.seed,
                                      num_epochs=cfg.epochs, flips=cfg.flips,
                                      images=not cfg.cache_embeddings,
                                      classes=cfg.classes_per_step,
                                      num_classes=len(class_names), augment=augment,
                                      negatives=cfg.negatives,
                                      negative_fraction=cfg.negative_fraction,
                                      num_workers=cfg.num_workers))
    it = iter(ds)
    if ckpts.latest_step() is not None:
        state, meta = ckpts.restore(state)
        it.set_state(meta["data"])
    key = key_from_json(meta["key"])
    start = int(meta["step"])
    log = Logger(str(workdir / "tb"), total, start, cfg.progress)
    log.info(f"{cfg.dataset}: {len(train_src)} training slices, {spe} steps/epoch, "
             f"{cfg.epochs} epochs, global batch {cfg.batch_size} on {jax.device_count()} "
             f"device(s); backbone {cfg.backbone}, class prompt widths "
             f"{tuple(cfg.class_prompt_widths)}, lr {cfg.lr:g}, flips {cfg.flips}; recipe "
             f"{cfg.recipe}: class embedding {cfg.class_embedding}, {cfg.classes_per_step} "
             f"class(es) per slice, negatives {cfg.negatives}, {cfg.augment} augmented "
             f"variant(s), presence {cfg.presence}"
             + (f"; resuming at step {start}" if start else ""))

    cache = None
    if cfg.cache_embeddings:
        embed = make_embed_fn(graphdef, mesh, enc_dtype)
        chunk = max(jax.device_count(), 8 // jax.device_count() * jax.device_count())
        cache = EmbeddingCache.build(train_src, frame, lambda x: embed(
            state["params"], frozen, jax.device_put(x, jax.sharding.NamedSharding(
                mesh, jax.sharding.PartitionSpec("data")))), flips=cfg.flips, chunk=chunk,
            log=log.info, augment=augment, seed=cfg.seed)

    stop = {"sigterm": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))

    data_state = meta["data"]

    def save(step):
        if ckpts.latest_step() == step:
            return
        meta["step"], meta["data"] = step, data_state
        ckpts.save(step, state, meta)

    def export(name):
        """Every process calls it (Orbax synchronises); process 0 writes."""
        save_model(nnx_model(graphdef, state, frozen), workdir / name, extra={
            "class_names": class_names, "train_config": dataclasses.asdict(cfg),
            "step": int(meta["step"])})

    def host_batches():
        """This process's batches, each with the iterator state just after it."""
        for batch in it:
            if cache is not None:
                batch["embedding"] = cache.lookup(batch)
            yield batch, it.get_state()

    # Device copies run PREFETCH batches ahead; a checkpoint stores the iterator state after
    # the last batch *trained on*, so a resumed run reads exactly the batches that follow it.
    batches = prefetch(host_batches(), lambda b: (shard_batch(b[0], mesh, cfg.cache_embeddings),
                                                  b[1]), size=PREFETCH)
    step = start
    t_last = time.perf_counter()
    try:
        while step < total:
            batch, data_state = next(batches)
            state, metrics = step_fn(state, frozen, batch, key)
            scalars = {k: float(v) for k, v in to_host(metrics).items()}
            if not all(math.isfinite(v) for v in scalars.values()):
                last = ckpts.latest_step()
                raise TrainingDiverged(
                    f"non-finite loss at step {step + 1} (loss={scalars['loss']}); stopping. The "
                    f"last good checkpoint (step {last}) in {ckpts.directory} is untouched.")
            step += 1
            now = time.perf_counter()
            ips = cfg.batch_size / max(now - t_last, 1e-9)
            t_last = now
            scalars["lr"] = learning_rate(state)
            log.step(step, scalars, ips)
            meta["epoch_loss_sum"] += scalars["loss"]
            meta["epoch_steps"] += 1
            end_of_epoch = step % spe == 0
            if end_of_epoch:
                epoch = step // spe
                epoch_loss = meta["epoch_loss_sum"] / meta["epoch_steps"]
                meta["epoch_losses"].append(epoch_loss)
                meta["epoch_loss_sum"], meta["epoch_steps"] = 0.0, 0
                if cfg.lr_schedule == "plateau" and plateau_update(meta["plateau"], epoch_loss,
                                                                   cfg):
                    state = set_learning_rate(state, learning_rate(state) * cfg.plateau_factor)
                    log.info(f"epoch {epoch}: no improvement for {cfg.plateau_patience} epochs, "
                             f"lr → {learning_rate(state):.3g}")
                log.scalars(step, {"epoch_loss": epoch_loss}, "train")
                log.info(f"epoch {epoch}/{cfg.epochs}: loss {epoch_loss:.4f}, "
                         f"lr {learning_rate(state):.3g}, {ips:.2f} img/s")
                if epoch_loss < meta["best_loss"]:
                    meta["best_loss"] = epoch_loss
                    export("best")
                if cfg.eval_every and epoch % cfg.eval_every == 0 and step < total:
                    _validate(builder, nnx_model(graphdef, state, frozen), class_names, frame,
                              log, step)
            if end_of_epoch or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) \
                    or step == total:
                save(step)
            if stop["sigterm"]:
                save(step)
                log.info(f"SIGTERM: checkpoint saved at step {step}; exiting. Re-run the same "
                         "command to resume.")
                log.close()
                ckpts.close()
                raise SystemExit(143)
    except TrainingDiverged:
        log.close()
        ckpts.close()
        raise
    log.info(f"training done: {step} steps")
    export("final")
    summary = {"steps": step, "epoch_losses": meta["epoch_losses"]}
    final_model = nnx_model(graphdef, state, frozen)
    if cfg.presence:  # each exported model gets the rule calibrated for it
        for name in ("best", "final"):
            if (workdir / name).exists():
                presence = _calibrate(builder, final_model if name == "final" else
                                      load_model(workdir / name), class_names, frame, log, name)
                if presence is not None:
                    update_meta(workdir / name, {"presence": presence})
                    summary[f"presence_{name}"] = presence
    min_area = summary.get("presence_final", {}).get("min_area", 0.0)
    ev = _validate(builder, final_model, class_names, frame, log, step, min_area)
    if ev is not None:
        metrics = ev.metrics
        summary["validation"] = {"mean_dsc": metrics.dsc, "mean_nsd": metrics.nsd, "per_class": {
            class_names[c - 1]: {"dsc": s.dsc, "nsd": s.nsd} for c, s in metrics.per_class.items()},
            "presence": ev.presence.to_dict()}
    if main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    ckpts.close()
    return summary


def nnx_model(graphdef, state, frozen) -> AutoMedSAM:
    from flax import nnx
    return nnx.merge(graphdef, to_host(state["params"]), to_host(frozen)).model


def _calibrate(builder, model, class_names, frame, log, name):
    """The presence rule of ``model`` calibrated on the validation split (None without one)."""
    src = builder.as_data_source("validation")
    if len(src) == 0:
        log.info("presence: no validation split to calibrate on; every class is drawn")
        return None
    presence = calibrate_presence(model, src, len(class_names), frame)
    log.info(f"presence ({name}): a class counts on a slice when its mask covers ≥ "
             f"{presence['min_area']:.2e} of the image; {100 * presence['accuracy']:.1f} % of "
             f"{presence['pairs']} validation (slice, class) pairs right")
    return presence


def _validate(builder, model, class_names, frame, log, step, min_area=0.0):
    src = builder.as_data_source("validation")
    if len(src) == 0:
        return None
    ev = evaluate(model, src, len(class_names), frame, min_area=min_area)
    metrics = ev.metrics
    log.scalars(step, {"dsc": metrics.dsc, "nsd": metrics.nsd,
                       "presence/precision": ev.presence.precision,
                       "presence/recall": ev.presence.recall, **{
        f"dsc/{class_names[c - 1]}": s.dsc for c, s in metrics.per_class.items()}}, "validation")
    log.info(f"validation at step {step}:\n" + summary_table(ev, class_names))
    return ev
