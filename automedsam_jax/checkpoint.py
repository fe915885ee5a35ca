"""Converted-model directories: ``config.json`` (a :class:`SamConfig`) + ``params/`` (Orbax).

This is what ``python -m convert`` writes and what :class:`~automedsam_jax.predictor.SamPredictor`
and training load. Orbax writes ``params/`` atomically (a temporary directory renamed when
complete); ``config.json`` is written through a temporary file and renamed too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import orbax.checkpoint as ocp
from flax import nnx

from .config import SamConfig
from .modeling import Sam

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def save_model(model: Sam, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (config + every variable) to ``directory``; ``extra`` goes into the JSON."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / PARAMS_DIR, nnx.to_pure_dict(nnx.state(model)), force=True)
    meta = {"model": model.config.to_dict(), **(extra or {})}
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory / CONFIG_FILE)
    return directory


def load_config(directory: str | Path) -> SamConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {directory} is not a converted model directory "
                                "(make one with `python -m convert SRC.pth OUT_DIR`)")
    return SamConfig.from_dict(json.loads(path.read_text())["model"])


def load_model(directory: str | Path) -> Sam:
    """Rebuild the model of ``directory`` and restore its variables (no random init is run)."""
    directory = Path(directory).absolute()
    cfg = load_config(directory)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Sam(cfg, rngs=nnx.Rngs(0))))
    target = nnx.to_pure_dict(abstract)
    try:
        with ocp.StandardCheckpointer() as ckpt:
            restored = ckpt.restore(directory / PARAMS_DIR, target)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise ValueError(f"{directory / PARAMS_DIR} does not hold the weights of preset "
                         f"{cfg.name!r} described by its {CONFIG_FILE}: {e}") from e
    nnx.replace_by_pure_dict(abstract, restored)
    return nnx.merge(graphdef, abstract)
