"""Model directories: ``config.json`` + ``params/`` (an Orbax checkpoint of every variable).

``python -m convert`` writes them for SAM/MedSAM/LiteMedSAM (:class:`Sam`, config key
``"model"``); training writes them for :class:`AutoMedSAM` (config key ``"automedsam"``).
:data:`MODEL_KEYS` is the registry from config type to key; :func:`load_model` rebuilds
whichever model the directory holds, without running a random init, and
:func:`pretrained_automedsam` puts a new class prompt encoder on a converted backbone.
Orbax writes ``params/`` atomically (a temporary directory renamed when complete);
``config.json`` is written through a temporary file and renamed too. A directory may be a URL
(``gs://``, :mod:`.paths`).
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ..core.automedsam import AutoMedSAM
from ..core.config import AutoMedSamConfig, ClassPromptConfig, LocaliserConfig, SamConfig
from ..core.init import abstract_model
from ..core.modeling import Sam
from .paths import AnyPath, as_path, write_atomic

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"

MODEL_KEYS: dict[type, str] = {SamConfig: "model", AutoMedSamConfig: "automedsam"}
"""The ``config.json`` key under which each model config type is stored."""


def save_model(model: nnx.Module, directory: str | os.PathLike, extra: dict | None = None
               ) -> AnyPath:
    """Write a :class:`Sam` or :class:`AutoMedSAM` (config + every variable) to ``directory``;
    ``extra`` goes into the JSON (e.g. class names, where the weights came from).

    In a multi-process job every process must call it (Orbax synchronises them); process 0
    writes."""
    directory = as_path(directory, absolute=True)
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model)), force=True)
    if jax.process_index() != 0:
        return directory
    _write_meta(directory, {MODEL_KEYS[type(model.config)]: model.config.to_dict(),
                            **(extra or {})})
    return directory


def _write_meta(directory: AnyPath, meta: dict) -> None:
    write_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=2))


def update_meta(directory: str | os.PathLike, extra: dict) -> None:
    """Add or replace top-level entries of a model directory's ``config.json`` (atomically;
    process 0 only), e.g. the calibrated presence rule after training."""
    if jax.process_index() == 0:
        _write_meta(as_path(directory), {**read_meta(directory), **extra})


def read_meta(directory: str | os.PathLike) -> dict:
    """The directory's ``config.json`` as a dict."""
    path = as_path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a model directory (make one "
                                "with `python -m convert SRC.pth OUT_DIR`, or by training)")
    return json.loads(path.read_text())


def load_config(directory: str | os.PathLike) -> SamConfig | AutoMedSamConfig:
    """The model config stored in ``directory``'s ``config.json``."""
    meta = read_meta(directory)
    for cls, key in MODEL_KEYS.items():
        if key in meta:
            return cls.from_dict(meta[key])
    raise ValueError(f"{as_path(directory) / CONFIG_FILE} describes no model (none of the keys "
                     f"{sorted(MODEL_KEYS.values())})")


def load_model(directory: str | os.PathLike) -> Sam | AutoMedSAM:
    """Rebuild the :class:`Sam` or :class:`AutoMedSAM` of ``directory`` and restore its weights."""
    directory = as_path(directory, absolute=True)
    cfg = load_config(directory)
    graphdef, state = nnx.split(abstract_model(cfg))
    try:
        with ocp.StandardCheckpointer() as ckpt:
            restored = ckpt.restore(directory / PARAMS_DIR, nnx.to_pure_dict(state))
    except (ValueError, KeyError, FileNotFoundError) as e:
        name = cfg.name if isinstance(cfg, SamConfig) else f"AutoMedSAM on {cfg.sam.name}"
        raise ValueError(f"{directory / PARAMS_DIR} does not hold the weights of {name!r} "
                         f"described by its {CONFIG_FILE}: {e}") from e
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def pretrained_automedsam(directory: str | os.PathLike,
                          class_prompt: ClassPromptConfig | None = ClassPromptConfig(),
                          seed: int = 0, localiser: LocaliserConfig | None = None,
                          prompt: str | None = None, spacing: float | None = None
                          ) -> AutoMedSAM:
    """The converted MedSAM/LiteMedSAM of ``directory`` (``python -m convert``) with the fresh
    parts of the prompt route ``prompt`` (:meth:`AutoMedSAM.from_sam`), fed at ``spacing`` mm per
    input-frame pixel when given (``FrameConfig.spacing``): where training starts."""
    sam = load_model(directory)
    if not isinstance(sam, Sam):
        raise ValueError(f"{directory} holds an AutoMedSAM, not a converted MedSAM/LiteMedSAM "
                         "backbone (`python -m convert SRC.pth DIR` makes one)")
    sam.config = sam.config.with_spacing(spacing)
    return AutoMedSAM.from_sam(sam, class_prompt, seed, localiser, prompt)
