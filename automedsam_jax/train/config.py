"""The training configuration: a frozen dataclass, the paper's recipe as defaults (SPEC §3), one
preset per dataset, two recipes, and the command line that overrides them.

Recipes (``--recipe``): ``paper`` is SPEC §1–3 exactly (scalar class id, one random present
class per slice, foreground slices only, no presence rule). ``improved`` (the command line's
default; README's ablation table, over seeds) prompts the frozen backbone with boxes read off a
localisation head's class map (``--prompt map``: only the head is trained), with the dataset's
organ-free training slices, no flips (they swap the body's sides, and so left/right classes)
and a presence rule calibrated on validation. The diffusion class prompt encoder under the
improved recipe (``--prompt class``: a learned class embedding, absent classes as negatives in
one sample of four, optionally ``--no-train-decoder``), all classes of a slice per step
(``--classes-per-step all``) and augmented variants (``--augment N``) are options. Each
extension has its own switch, applied over the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

from ..core.config import ClassPromptConfig, LocaliserConfig, LossConfig
from ..data.custom import add_dataset_arguments, dataset_argument, dataset_name
from ..data.presets import DEFAULT_DATA_DIR
from ..io.rundir import DEFAULT_WORKDIR


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    dataset:       a data preset (``brats``, ``abdomenct1k``, ``abdomenct1k_split_kidney``,
                   ``kvasir``, ``chestxml``, ``demo``), ``synthetic:k=v,...`` (SyntheticConfig
                   fields, e.g. ``synthetic:num_cases=8,num_classes=3,height=64,width=64``) or
                   a user dataset as one line of JSON (:mod:`automedsam_jax.data.custom`).
    weights:       converted MedSAM/LiteMedSAM model directory; ``pretrained`` = LiteMedSAM fetched
                   with pip; ``random`` = random weights (tests, smoke runs).
    batch_size:    global batch (over every device and host).
    lr_schedule:   ``plateau`` (the paper's: lr × ``plateau_factor`` when the mean epoch loss has
                   not improved for ``plateau_patience`` epochs) or ``cosine`` (lr → 0 over the run).
    recipe:        the recipe these fields were filled from (``paper``/``improved``; a record).
    class_embedding: ``scalar`` (paper) or ``learned`` (one vector per class id).
    classes_per_step: ``one`` present class per slice (paper) or ``all`` K classes of the slice
                   decoded against its one embedding.
    negatives:     absent classes as negatives (empty targets) and the dataset's organ-free
                   training slices: with ``all``, every absent class of the slice; with ``one``,
                   an absent class in ``negative_fraction`` of the samples.
    augment:       augmented variants per training slice (0: none; scale/shift/intensity).
    presence:      calibrate a presence rule on validation and store it with the models.
    prompt:        what prompts the decoder: ``class``, the diffusion class prompt encoder (the
                   paper); ``map``, boxes read off a localisation head's per-pixel class map
                   on the frozen embedding, through the backbone's own prompt encoder and frozen
                   decoder (beyond the paper; only the head is trained, with a class-balanced
                   cross-entropy at the embedding grid;
                   :mod:`automedsam_jax.core.modeling.localiser`).
    localiser_width: the head's 3×3 conv channels (0: a linear probe).
    train_decoder: with ``prompt="class"``: train the mask decoder (the paper) or keep the
                   pretrained one frozen.
    cache_dir:     with ``cache_embeddings``: where the embeddings are stored (default
                   ``<data_dir>/embeddings``; :mod:`automedsam_jax.data.embedding_cache`).
    cache_dtype:   their storage dtype, ``float32`` (exact) or ``bfloat16``.
    """

    dataset: str = "demo"
    data_dir: str = DEFAULT_DATA_DIR
    manual_dir: str | None = None
    backbone: str = "litemedsam"
    weights: str = "pretrained"
    workdir: str = DEFAULT_WORKDIR
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    plateau_patience: int = 5
    plateau_factor: float = 0.9
    seed: int = 0
    diffusion: bool = True
    branches: Literal["both", "dense", "sparse"] = "both"
    class_prompt_widths: tuple[int, int, int] = (64, 128, 256)
    loss_terms: tuple[str, ...] = ("mse", "ce", "dice", "sd")
    loss_weighting: Literal["uncertainty", "fixed"] = "uncertainty"
    flips: bool = True
    cache_embeddings: bool = False
    cache_dir: str | None = None
    cache_dtype: Literal["float32", "bfloat16"] = "float32"
    encoder_dtype: Literal["float32", "bfloat16"] = "float32"
    keep_checkpoints: int = 3
    checkpoint_every: int = 0
    eval_every: int = 0
    num_workers: int = 0
    max_steps: int = 0
    progress: bool = True
    distributed: Literal["auto", "on", "off"] = "auto"
    recipe: Literal["paper", "improved"] = "paper"
    class_embedding: Literal["scalar", "learned"] = "scalar"
    classes_per_step: Literal["one", "all"] = "one"
    negatives: bool = False
    negative_fraction: float = 0.25
    augment: int = 0
    presence: bool = False
    prompt: Literal["class", "map"] = "class"
    localiser_width: int = 64
    train_decoder: bool = True

    def __post_init__(self):
        if not 0.0 <= self.negative_fraction <= 1.0:
            raise ValueError(f"--negative-fraction must be in [0, 1], got "
                             f"{self.negative_fraction}")

    def localiser(self, num_classes: int) -> LocaliserConfig | None:
        """The localisation head's config (``prompt="map"``), else None."""
        if self.prompt != "map":
            return None
        return LocaliserConfig(num_classes=num_classes, width=self.localiser_width)

    def class_prompt(self, num_classes: int) -> ClassPromptConfig:
        """The class prompt encoder's config for a dataset of ``num_classes`` classes."""
        learned = self.class_embedding == "learned"
        return ClassPromptConfig(widths=tuple(self.class_prompt_widths), diffusion=self.diffusion,
                                 branches=self.branches, class_embedding=self.class_embedding,
                                 num_classes=num_classes if learned else 0)

    def loss(self) -> LossConfig:
        return LossConfig(terms=tuple(self.loss_terms), weighting=self.loss_weighting)


_CHALLENGE = dict(backbone="medsam_vit_b", weights="", cache_embeddings=False, eval_every=5)

PRESETS: dict[str, TrainConfig] = {
    # The offline demo on a GPU/TPU: the paper's recipe (SPEC §3) on the demo CT with the real
    # LiteMedSAM weights. Frozen encoder ⇒ embeddings cached once per flip variant (the same
    # losses as running the encoder in the step, see tests/test_train_step.py).
    "demo": TrainConfig(dataset="demo", backbone="litemedsam", weights="pretrained",
                        workdir=DEFAULT_WORKDIR, cache_embeddings=True),
    # The same demo on a CPU, sized for ≤ 15 min on 2 cores (measured: see README "Training").
    # Narrower class prompt encoder (≈ 4× fewer FLOPs than 64/128/256), no flips (17 cached
    # embeddings instead of 68, and the organs keep their side of the body), batch 2 so the
    # 17 training slices give 8 updates per epoch, lr 5e-4 (a fresh class prompt encoder) decayed
    # to 0 over 60 epochs. Measured alternatives: lr 1e-3 over 60 epochs ended at mean DSC 0.41,
    # lr 1e-3 over 40 epochs at 0.41 (a constant lr swings between evaluations).
    "demo_cpu": TrainConfig(dataset="demo", backbone="litemedsam", weights="pretrained",
                            workdir=DEFAULT_WORKDIR, epochs=60, batch_size=2, lr=5e-4,
                            lr_schedule="cosine", class_prompt_widths=(32, 64, 128), flips=False,
                            cache_embeddings=True),
    **{name: TrainConfig(dataset=name, workdir=f"runs/{name}", **_CHALLENGE)
       for name in ("brats", "abdomenct1k", "abdomenct1k_split_kidney", "kvasir", "chestxml")},
}


RECIPES: dict[str, dict] = {
    "paper": dict(recipe="paper", class_embedding="scalar", classes_per_step="one",
                  negatives=False, negative_fraction=0.25, augment=0, presence=False,
                  prompt="class", train_decoder=True),
    "improved": dict(recipe="improved", class_embedding="learned", classes_per_step="one",
                     negatives=True, negative_fraction=0.25, augment=0, presence=True,
                     flips=False, prompt="map", train_decoder=True),
}
"""Fields each recipe sets over the dataset preset (see the module docstring)."""

# Per (dataset preset, recipe): what differs from the preset under that recipe. The demo under
# the improved recipe trains the localiser alone on cached embeddings (34 training slices, the
# organ-free ones included): batch 8, AdamW 1e-3 decayed to 0 over 100 epochs (400 steps).
# Validation every 20 epochs picks best/ (the validation curve is in summary.json and tb/).
_DEMO_MAP = dict(epochs=100, batch_size=8, lr=1e-3, lr_schedule="cosine", eval_every=20)
RECIPE_PRESETS: dict[tuple[str, str], dict] = {
    ("demo_cpu", "improved"): _DEMO_MAP,
    ("demo", "improved"): _DEMO_MAP,
}


def preset(dataset: str, backend: str | None = None, recipe: str = "paper") -> TrainConfig:
    """The dataset's preset under ``recipe``; ``demo`` on a CPU ``backend`` (default: JAX's,
    which initialises JAX — multi-host jobs name their dataset) is ``demo_cpu``."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    name = dataset
    if dataset == "demo":
        if backend is None:
            import jax
            backend = jax.default_backend()
        name = "demo_cpu" if backend == "cpu" else "demo"
    base = PRESETS.get(name) or TrainConfig(dataset=dataset,
                                            workdir=f"runs/{dataset_name(dataset)}")
    return dataclasses.replace(base, **RECIPES[recipe], **RECIPE_PRESETS.get((name, recipe), {}))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train AutoMedSAM (class prompt encoder + mask decoder on a frozen "
                    "MedSAM/LiteMedSAM encoder). With no arguments: the offline demo (real CT, "
                    "real LiteMedSAM weights, embeddings cached; the paper's recipe on a GPU/TPU, "
                    "a 15-minute recipe on a CPU). Options left out "
                    "take the dataset preset's value; re-running the same command resumes from "
                    "the latest checkpoint in --workdir.")
    a = p.add_argument
    a("--recipe", default="improved", choices=sorted(RECIPES), help="paper: SPEC §1-3 exactly; "
      "improved: boxes from a localisation head prompt the frozen backbone (--prompt map), "
      "organ-free slices as negatives, no flips, a presence rule (each has its own switch)")
    a("--dataset", help="data preset (brats, abdomenct1k, abdomenct1k_split_kidney, kvasir, "
      "chestxml, demo: the default), synthetic:num_cases=8,num_classes=3,height=64,width=64, "
      "a dataset .json file, or the name of your own dataset given by --files and --classes")
    add_dataset_arguments(p)
    a("--data-dir", help="tfds data directory (built datasets are cached there)")
    a("--manual-dir", help="directory with the challenge .npz files (default <data-dir>/downloads/manual)")
    a("--backbone", help="SAM-family preset: litemedsam, medsam_vit_b, sam_vit_b, tiny_litemedsam, tiny_vit_b, ...")
    a("--weights", help="converted model dir (python -m convert), 'pretrained' (LiteMedSAM via pip) or 'random'")
    a("--workdir", help="checkpoints, TensorBoard events, exported best/final models")
    a("--epochs", type=int, help="training epochs (paper: 100)")
    a("--batch-size", type=int, help="global batch size over all devices and hosts (paper: 16)")
    a("--lr", type=float, help="AdamW learning rate (paper: 1e-4)")
    a("--lr-schedule", choices=("plateau", "cosine"), help="plateau: the paper's ×0.9 after 5 "
      "epochs without improvement; cosine: decay to 0 over the run")
    a("--seed", type=int, help="data order, augmentation, diffusion noise and init seed")
    a("--no-diffusion", action="store_true", help="ablation (Table 6): feed the image embedding to "
      "the class prompt encoder without forward diffusion")
    a("--branches", choices=("both", "dense", "sparse"), help="ablation (Table 5): prompt branches")
    a("--class-prompt-widths", type=lambda s: tuple(int(x) for x in s.split(",")),
      help="class prompt encoder widths, e.g. 64,128,256 (paper) or 8,16,32 (tests)")
    a("--loss-terms", type=lambda s: tuple(s.split(",")), help="ablation (Table 7): comma-separated "
      "subset of mse,ce,dice,sd")
    a("--loss-weighting", choices=("uncertainty", "fixed"), help="learned σ per term or sum")
    a("--flips", action=argparse.BooleanOptionalAction, default=None,
      help="random horizontal/vertical flips of training slices (4 cached variants each)")
    a("--cache-embeddings", action=argparse.BooleanOptionalAction, default=None,
      help="compute each training image's embedding once per flip and augmentation variant "
      "(frozen encoder), then train from the cache")
    a("--cache-dir", help="where --cache-embeddings stores the embeddings (default "
      "<data-dir>/embeddings; reused by every run with the same inputs; on several hosts: "
      "storage they all read)")
    a("--cache-dtype", choices=("float32", "bfloat16"), help="storage dtype of the cached "
      "embeddings (bfloat16: half the disk and reads)")
    a("--encoder-dtype", choices=("float32", "bfloat16"), help="compute dtype of the frozen encoder")
    a("--class-embedding", choices=("scalar", "learned"), help="class id as a scalar through "
      "Linear(1→g²) (paper) or a learned vector per class")
    a("--classes-per-step", choices=("one", "all"), help="one random present class per slice "
      "(paper) or every class of the slice against its one embedding")
    a("--negatives", action=argparse.BooleanOptionalAction, default=None,
      help="absent classes as negatives (empty targets) and organ-free training slices")
    a("--negative-fraction", type=float, help="with --negatives and one class per slice: the "
      "fraction of samples that take an absent class")
    a("--augment", type=int, help="augmented variants per training slice (scale, shift, "
      "intensity); 0: none")
    a("--presence", action=argparse.BooleanOptionalAction, default=None,
      help="calibrate on validation, and store with the model, when a class counts as present "
      "on a slice")
    a("--prompt", choices=("class", "map"), help="class: the diffusion class prompt encoder "
      "prompts the decoder (paper); map: boxes from a localisation head's class map prompt the "
      "frozen backbone (only the head is trained)")
    a("--localiser-width", type=int, help="with --prompt map: channels of the localiser's two "
      "3x3 convolutions (0: a linear probe)")
    a("--train-decoder", action=argparse.BooleanOptionalAction, default=None,
      help="with --prompt class: train the mask decoder (paper) or keep the pretrained one")
    a("--keep-checkpoints", type=int, help="latest checkpoints kept")
    a("--checkpoint-every", type=int, help="also checkpoint every N steps (0: once per epoch)")
    a("--eval-every", type=int, help="validate every N epochs and after the last (best/ is then "
      "the model of highest validation mean DSC); 0: only at the end (best/: lowest epoch loss)")
    a("--num-workers", type=int, help="grain worker processes")
    a("--max-steps", type=int, help="stop after N steps (0: all epochs)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--distributed", choices=("auto", "on", "off"), help="call jax.distributed.initialize() "
      "(multi-host): auto = when the environment names a coordinator, Slurm/Open MPI tasks or "
      "several TPU hosts; on = always (e.g. every worker of a TPU pod slice)")
    return p


def from_args(argv=None) -> TrainConfig:
    """The run's config: the dataset's preset under ``--recipe``, then every option given.
    Raises ``ValueError``/``BadInputError`` for a dataset that cannot be defined."""
    p = parser()
    args = p.parse_args(argv)
    args.dataset = dataset_argument(args.dataset, args.files, args.classes, args.modality,
                                    args.ndim) or "demo"
    cfg = preset(args.dataset, recipe=args.recipe)
    over = {k: v for k, v in vars(args).items() if v is not None and k not in (
        "no_diffusion", "no_progress", "recipe", "files", "classes", "modality", "ndim")}
    if args.no_diffusion:
        over["diffusion"] = False
    if args.no_progress:
        over["progress"] = False
    if over.get("dataset", cfg.dataset) != cfg.dataset:
        over.setdefault("workdir", f"runs/{dataset_name(args.dataset)}")
    cfg = dataclasses.replace(cfg, **over)
    LossConfig(terms=tuple(cfg.loss_terms), weighting=cfg.loss_weighting)  # validate early
    return cfg
