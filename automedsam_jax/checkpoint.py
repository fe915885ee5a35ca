"""Model directories: ``config.json`` + ``params/`` (an Orbax checkpoint of every variable).

``python -m convert`` writes them for SAM/MedSAM/LiteMedSAM (:class:`Sam`, config key
``"model"``); training writes them for :class:`AutoMedSAM` (config key ``"automedsam"``).
:func:`load_model` rebuilds whichever the directory holds, without running a random init.
Orbax writes ``params/`` atomically (a temporary directory renamed when complete);
``config.json`` is written through a temporary file and renamed too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx

from .config import AutoMedSamConfig, SamConfig
from .modeling import Sam

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_model(model: nnx.Module, directory: str | Path, extra: dict | None = None) -> Path:
    """Write a :class:`Sam` or :class:`AutoMedSAM` (config + every variable) to ``directory``;
    ``extra`` goes into the JSON (e.g. class names, where the weights came from).

    In a multi-process job every process must call it (Orbax synchronises them); process 0
    writes."""
    from .automedsam import AutoMedSAM

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model)), force=True)
    if jax.process_index() != 0:
        return directory
    key = "automedsam" if isinstance(model, AutoMedSAM) else "model"
    _write_meta(directory, {key: model.config.to_dict(), **(extra or {})})
    return directory


def _write_meta(directory: Path, meta: dict) -> None:
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory / CONFIG_FILE)


def update_meta(directory: str | Path, extra: dict) -> None:
    """Add or replace top-level entries of a model directory's ``config.json`` (atomically;
    process 0 only), e.g. the calibrated presence rule after training."""
    if jax.process_index() == 0:
        _write_meta(Path(directory), {**read_meta(directory), **extra})


def read_meta(directory: str | Path) -> dict:
    """The directory's ``config.json`` as a dict."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a model directory (make one "
                                "with `python -m convert SRC.pth OUT_DIR`, or by training)")
    return json.loads(path.read_text())


def load_config(directory: str | Path) -> SamConfig | AutoMedSamConfig:
    meta = read_meta(directory)
    if "automedsam" in meta:
        return AutoMedSamConfig.from_dict(meta["automedsam"])
    return SamConfig.from_dict(meta["model"])


def load_model(directory: str | Path):
    """Rebuild the :class:`Sam` or :class:`AutoMedSAM` of ``directory`` and restore its weights."""
    from .automedsam import AutoMedSAM

    directory = Path(directory).absolute()
    cfg = load_config(directory)
    abstract = (AutoMedSAM.abstract(cfg) if isinstance(cfg, AutoMedSamConfig)
                else nnx.eval_shape(lambda: Sam(cfg, rngs=nnx.Rngs(0))))
    graphdef, state = nnx.split(abstract)
    try:
        with ocp.StandardCheckpointer() as ckpt:
            restored = ckpt.restore(directory / PARAMS_DIR, nnx.to_pure_dict(state))
    except (ValueError, KeyError, FileNotFoundError) as e:
        name = cfg.name if isinstance(cfg, SamConfig) else f"AutoMedSAM on {cfg.sam.name}"
        raise ValueError(f"{directory / PARAMS_DIR} does not hold the weights of {name!r} "
                         f"described by its {CONFIG_FILE}: {e}") from e
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)
