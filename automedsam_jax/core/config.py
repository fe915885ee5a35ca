"""Frozen dataclass configs and the named presets of every SAM-family backbone.

A :class:`SamConfig` says everything needed to rebuild a model and to feed it: the image encoder
(:class:`ViTConfig` for SAM/MedSAM, :class:`TinyViTConfig` for LiteMedSAM), the prompt encoder and
mask decoder sizes, and the image frame (:class:`FrameConfig`: how a raw image becomes the encoder
input, and how low-res mask logits go back to the original image).

Presets (``SamConfig.preset(name)`` or ``SAM_PRESETS[name]()``):

``medsam_vit_b``   SAM ViT-B at 1024 px, MedSAM preprocessing (stretch to 1024², bicubic, min-max).
``sam_vit_b/l/h``  SAM ViT-B/L/H at 1024 px, SAM preprocessing (longest side 1024, mean/std, pad).
``litemedsam``     TinyViT at 256 px as in LiteMedSAM (longest side 256, area, min-max, pad).
``tiny_vit_b``     a 2-block ViT at 96 px with a tiny decoder: unit tests only.
``tiny_litemedsam`` a TinyViT with tiny widths at 256 px: unit tests only.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """SAM's ``ImageEncoderViT``: patch embed, windowed/global blocks with decomposed rel-pos, neck."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_chans: int = 256
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class TinyViTConfig:
    """LiteMedSAM's TinyViT: 1×1 patch embed, MBConv stage, three attention stages, neck.

    Stages 1 and 2 halve the resolution; the last ``PatchMerging`` keeps it (stride 1), so the
    embedding is ``img_size // 4`` on a side (64 at 256 px).
    """

    img_size: int = 256
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_chans: int = 256

    @property
    def embedding_size(self) -> int:
        return self.img_size // 4


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """SAM's prompt encoder + mask decoder (two-way transformer) sizes."""

    transformer_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


@dataclasses.dataclass(frozen=True)
class FrameConfig:
    """How a raw image (any H×W) becomes the encoder's square input, and how masks come back.

    resize:      ``"stretch"`` resizes the whole image to ``size``×``size`` (MedSAM);
                 ``"longest"`` resizes the longest side to ``size`` keeping the aspect ratio and
                 zero-pads bottom/right (SAM, LiteMedSAM).
    interpolation: ``"bicubic"`` or ``"area"`` (box filter; cv2's INTER_AREA when downscaling).
    normalize:   ``"minmax"`` maps each image to [0, 1]; ``"imagenet"`` does (x − mean)/std on the
                 0–255 scale with SAM's pixel mean/std.
    mask_resize: how low-res mask logits go back to the original size: ``"sam"`` upsamples the 4×
                 low-res logits to the input frame, crops the padding and resizes to the original
                 size (SAM's ``postprocess_masks``); ``"medsam"`` crops the padding in the low-res
                 frame and resizes straight to the original size. (Saved before it had this
                 name, it was ``postprocess``: :meth:`SamConfig.from_dict` reads both.)
    spacing:     a physical scale (beyond the presets; None: off): an image whose pixel spacing
                 is known (a volume's slices) is first resampled to ``spacing`` mm per pixel
                 and centred on an ``size`` × ``size`` canvas (cropped or zero-padded), which
                 the frame then takes as it is (:func:`~automedsam_jax.core.preprocess.to_physical`);
                 images without a spacing (2-D datasets) keep ``resize``.
    """

    size: int = 1024
    resize: Literal["stretch", "longest"] = "stretch"
    interpolation: Literal["bicubic", "area"] = "bicubic"
    normalize: Literal["minmax", "imagenet"] = "minmax"
    mask_resize: Literal["sam", "medsam"] = "medsam"
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    spacing: float | None = None


@dataclasses.dataclass(frozen=True)
class SamConfig:
    """A whole SAM-family model: image encoder, prompt encoder, mask decoder and image frame."""

    name: str
    encoder: ViTConfig | TinyViTConfig
    decoder: DecoderConfig = DecoderConfig()
    frame: FrameConfig = FrameConfig()

    @property
    def family(self) -> str:
        return "vit" if isinstance(self.encoder, ViTConfig) else "tinyvit"

    @property
    def image_size(self) -> int:
        """Side of the square encoder input (px): 1024 for SAM/MedSAM, 256 for LiteMedSAM."""
        return self.encoder.img_size

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for every full-size preset)."""
        return self.encoder.embedding_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-res mask logits: 4× the embedding (256 for full presets)."""
        return 4 * self.embedding_size

    # -- presets ---------------------------------------------------------------------------
    def with_spacing(self, spacing: float | None) -> "SamConfig":
        """The same model fed at ``spacing`` mm per input-frame pixel (:class:`FrameConfig`)."""
        if spacing is not None and not spacing > 0:
            raise ValueError(f"a frame's spacing must be > 0 mm per pixel, got {spacing}")
        return dataclasses.replace(self, frame=dataclasses.replace(self.frame, spacing=spacing))

    @classmethod
    def preset(cls, name: str) -> "SamConfig":
        if name not in SAM_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(SAM_PRESETS)}")
        return SAM_PRESETS[name]()

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["family"] = self.family
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "SamConfig":
        d = dict(d)
        family = d.pop("family")
        enc_cls = ViTConfig if family == "vit" else TinyViTConfig
        return cls(
            name=d["name"],
            encoder=_from_dict(enc_cls, d["encoder"]),
            decoder=_from_dict(DecoderConfig, d["decoder"]),
            frame=_from_dict(FrameConfig, _renamed(d["frame"], FRAME_RENAMED)),
        )

    @classmethod
    def from_json(cls, text: str) -> "SamConfig":
        return cls.from_dict(json.loads(text))


FRAME_RENAMED = {"postprocess": "mask_resize"}
"""Old :class:`FrameConfig` keys → their names now (model configs saved before the rename)."""


def _renamed(d: dict, renamed: dict[str, str]) -> dict:
    """``d`` with its old keys under their new names."""
    return {renamed.get(k, k): v for k, v in d.items()}


def _from_dict(klass, d: dict):
    fields = {f.name: f for f in dataclasses.fields(klass)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown {klass.__name__} fields {sorted(unknown)}")
    return klass(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


SAM_FRAME = FrameConfig(size=1024, resize="longest", interpolation="bicubic", normalize="imagenet",
                        mask_resize="sam")
MEDSAM_FRAME = FrameConfig(size=1024, resize="stretch", interpolation="bicubic", normalize="minmax",
                           mask_resize="medsam")
LITEMEDSAM_FRAME = FrameConfig(size=256, resize="longest", interpolation="area", normalize="minmax",
                               mask_resize="medsam")


def sam_vit_b() -> SamConfig:
    return SamConfig("sam_vit_b", ViTConfig(), frame=SAM_FRAME)


def sam_vit_l() -> SamConfig:
    return SamConfig("sam_vit_l", ViTConfig(embed_dim=1024, depth=24, num_heads=16,
                                            global_attn_indexes=(5, 11, 17, 23)), frame=SAM_FRAME)


def sam_vit_h() -> SamConfig:
    return SamConfig("sam_vit_h", ViTConfig(embed_dim=1280, depth=32, num_heads=16,
                                            global_attn_indexes=(7, 15, 23, 31)), frame=SAM_FRAME)


def medsam_vit_b() -> SamConfig:
    return SamConfig("medsam_vit_b", ViTConfig(), frame=MEDSAM_FRAME)


def litemedsam() -> SamConfig:
    return SamConfig("litemedsam", TinyViTConfig(), frame=LITEMEDSAM_FRAME)


TINY_DECODER = DecoderConfig(transformer_dim=32, depth=2, num_heads=2, mlp_dim=64,
                             iou_head_hidden_dim=32, mask_in_chans=4)


def tiny_vit_b() -> SamConfig:
    """ViT family at 96 px: 6×6 embedding, window 4 (so windows are padded), 2 heads."""
    enc = ViTConfig(img_size=96, embed_dim=32, depth=2, num_heads=2, out_chans=32,
                    window_size=4, global_attn_indexes=(1,))
    return SamConfig("tiny_vit_b", enc, decoder=TINY_DECODER,
                     frame=dataclasses.replace(MEDSAM_FRAME, size=96))


def tiny_litemedsam() -> SamConfig:
    """TinyViT family at 256 px with tiny widths. The PyTorch reference fixes what stays: the
    last width 320 (its rule for a stride-1 last PatchMerging), the 64×64 grid and 256 channels."""
    enc = TinyViTConfig(embed_dims=(8, 16, 16, 320), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                        window_sizes=(7, 7, 14, 7))
    dec = dataclasses.replace(TINY_DECODER, transformer_dim=256)
    return SamConfig("tiny_litemedsam", enc, decoder=dec, frame=LITEMEDSAM_FRAME)


SAM_PRESETS = {f.__name__: f for f in (sam_vit_b, sam_vit_l, sam_vit_h, medsam_vit_b, litemedsam,
                                       tiny_vit_b, tiny_litemedsam)}
"""The SAM-family backbones by name (``SamConfig.preset``); dataset presets are
:data:`automedsam_jax.data.presets.PRESETS`."""

__all__ = ["ViTConfig", "TinyViTConfig", "DecoderConfig", "FrameConfig", "SamConfig",
           "SAM_PRESETS"]


# -- AutoMedSAM ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassPromptConfig:
    """The diffusion class prompt encoder (docs/method.md#class-prompt-encoder); embedding side
    and channels come from the backbone's :class:`SamConfig`."""

    widths: tuple[int, int, int] = (64, 128, 256)
    """class prompt encoder channels: enc1, enc2 and the middle block's hidden layer (the paper:
    64 128 256); the middle block returns widths[1] channels"""
    timesteps: int = 100
    """T of the forward diffusion (closed form, so T costs nothing)"""
    diffusion: bool = True
    """forward diffusion of the image embedding; off feeds the embedding itself (x_T = F, the
    paper's Table 6 ablation)"""
    branches: Literal["both", "dense", "sparse"] = "both"
    """prompt branches built (the paper's Table 5 ablation); a disabled one is replaced by
    MedSAM's no-prompt output (no sparse tokens, or no_mask_embed)"""
    class_embedding: Literal["scalar", "learned"] = "scalar"
    """how the class id enters: scalar (the paper) = Linear(1 -> g*g)(c) and the raw id as the
    attention's class channel; learned = one N(0, 1) vector of g*g per class id and one learned
    class-channel value per class (initialised to the id)"""
    num_classes: int = dataclasses.field(default=0, metadata={"cmd": False})
    """K, the class ids 1..K of a learned embedding; 0 with the scalar one (a trainer fills it
    from the dataset)"""

    def __post_init__(self):
        if self.class_embedding not in ("scalar", "learned"):
            raise ValueError(f"class_embedding must be 'scalar' or 'learned', got "
                             f"{self.class_embedding!r}")
        if min(self.widths) < 1 or self.timesteps < 1 or self.num_classes < 0:
            raise ValueError(f"class prompt widths and timesteps must be >= 1, got "
                             f"{self.widths}, {self.timesteps}")

    def check(self) -> None:
        """Raise if the config cannot build a model (a learned embedding without classes)."""
        if self.class_embedding == "learned" and self.num_classes < 1:
            raise ValueError("a learned class embedding needs num_classes >= 1")

    @property
    def has_dense(self) -> bool:
        return self.branches in ("both", "dense")

    @property
    def has_sparse(self) -> bool:
        return self.branches in ("both", "sparse")


TINY_CLASS_PROMPT = ClassPromptConfig(widths=(8, 16, 32))


@dataclasses.dataclass(frozen=True)
class LocaliserConfig:
    """The localisation head (beyond the paper; docs/method.md#localisation-head): a per-pixel
    softmax over background and classes 1..K on the frozen (g, g, C) image embedding, whose map
    prompts the backbone itself."""

    num_classes: int = dataclasses.field(default=0, metadata={"cmd": False})
    """K (a trainer fills it from the dataset)"""
    width: int = 64
    """the localiser's channels of its two 3x3 convolutions (GELU after each) before the 1x1
    classifier; 0 is a linear probe"""
    normalise: bool = False
    """standardise each embedding channel over the image's grid (zero mean, unit variance per
    image) before the head: a global change of the scan (another scanner's noise, resolution or
    window) moves the embedding's statistics, which this removes"""
    head: Literal["conv", "multiscale"] = "conv"
    """conv: two 3x3 convolutions at the embedding grid (a 5-cell receptive field); multiscale:
    a 1x1 reduction to width channels, then 3x3 convolutions at the grid, at half and at a
    quarter of it, summed back at the grid (a receptive field of most of the image)"""
    margin: float = 1.0
    """embedding-grid cells added to each side of a class's box from the map (one cell is S/g
    input-frame pixels: 4 at 256 px, 16 at 1024 px)"""

    def __post_init__(self):
        if self.num_classes < 0 or self.width < 0 or self.margin < 0:
            raise ValueError(f"localiser width and margin must be >= 0, got {self.width}, "
                             f"{self.margin}")
        if self.head == "multiscale" and self.width < 1:
            raise ValueError("the multiscale localiser needs --localiser-width >= 1")

    def check(self) -> None:
        """Raise if the config cannot build a head (no classes)."""
        if self.num_classes < 1:
            raise ValueError(f"the localiser needs num_classes >= 1, got {self.num_classes}")


PromptRoute = Literal["class", "map", "refine"]


@dataclasses.dataclass(frozen=True)
class AutoMedSamConfig:
    """AutoMedSAM: a SAM-family backbone (frozen encoder and prompt encoder) and what prompts its
    mask decoder — the ``prompt`` route (:mod:`automedsam_jax.core.routes`): ``class`` (the
    paper: the diffusion class prompt encoder, ``class_prompt``), ``map`` (boxes read off the
    localisation head's map, ``localiser``, through the backbone's own prompt encoder) or
    ``refine`` (the class prompt encoder refining the map's box prompt: both). A model holds
    the parts its route uses; :func:`~automedsam_jax.core.routes.model_config` fills the
    others with None."""

    sam: SamConfig
    class_prompt: ClassPromptConfig | None = ClassPromptConfig()
    localiser: LocaliserConfig | None = None
    prompt: PromptRoute = "class"
    """the route (which parts it needs: :func:`~automedsam_jax.core.routes.model_config`)"""

    def to_dict(self) -> dict:
        return {"sam": self.sam.to_dict(), "prompt": self.prompt,
                "class_prompt": None if self.class_prompt is None
                else dataclasses.asdict(self.class_prompt),
                "localiser": None if self.localiser is None
                else dataclasses.asdict(self.localiser)}

    @classmethod
    def from_dict(cls, d: dict) -> "AutoMedSamConfig":
        """The config :meth:`to_dict` wrote; a model saved before routes had names (no
        ``prompt``) is ``map`` when it has a localiser (its unused class prompt encoder is kept,
        so its weights load as saved), else ``class``."""
        loc, cp = d.get("localiser"), d.get("class_prompt")
        return cls(SamConfig.from_dict(d["sam"]),
                   None if cp is None else _from_dict(ClassPromptConfig, cp),
                   None if loc is None else _from_dict(LocaliserConfig, loc),
                   d.get("prompt") or ("class" if loc is None else "map"))


LossTerm = Literal["mse", "ce", "dice", "sd"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The joint loss (docs/method.md#losses): which terms, and how they are weighted."""

    terms: tuple[LossTerm, ...] = ("mse", "ce", "dice", "sd")
    """loss terms, distinct items of mse ce dice sd (the paper's Table 7 ablation)"""
    weighting: Literal["uncertainty", "fixed"] = "uncertainty"
    """uncertainty: one learned sigma per term (sum of L/(2 sigma^2) + log(1 + sigma^2)); fixed:
    the terms summed with weight 1"""

    def __post_init__(self):
        unknown = set(self.terms) - {"mse", "ce", "dice", "sd"}
        if unknown or not self.terms or len(set(self.terms)) != len(self.terms):
            raise ValueError(f"--terms must be distinct items of mse ce dice sd, got "
                             f"{' '.join(self.terms)}")

__all__ += ["ClassPromptConfig", "TINY_CLASS_PROMPT", "LocaliserConfig", "AutoMedSamConfig",
            "LossConfig"]
