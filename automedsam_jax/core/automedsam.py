"""AutoMedSAM: segment an organ from its class id alone (docs/method.md#architecture).

A SAM-family backbone — frozen image encoder, frozen SAM prompt encoder (positional encoding and
distillation teacher), trained mask decoder — with the trained diffusion
:class:`~automedsam_jax.core.modeling.class_prompt_encoder.ClassPromptEncoder` in place of box
prompts.

Frames: images ``(B, S, S, 3)`` in the preset's input frame (already preprocessed, see
:mod:`automedsam_jax.core.preprocess`); image embeddings ``(B, g, g, C)``; masks are low-res-frame
logits ``(B, 4g, 4g)`` (256×256 at full size) —
:func:`automedsam_jax.core.preprocess.postprocess_masks` takes them to the original image. Class
ids are ints 1..K; 0 is background in label maps.

    model = AutoMedSAM.from_sam(sam, ClassPromptConfig())           # a pretrained Sam + new head
    out = model(images, class_ids)                                  # training / one class each
    emb = model.embed(images); out = model.decode(emb, class_ids)   # cached embeddings
    emb = embed_images(sam_or_automedsam, images, jnp.bfloat16)    # the one embedding path
    out = model.decode(emb, jnp.arange(1, K + 1)[None])             # every class of one image
    labels = label_map(out.low_res_logits, threshold=0.0)           # (4g, 4g) ids, 0 = none

Loading a model directory is :func:`automedsam_jax.io.checkpoint.load_model` (and
:func:`~automedsam_jax.io.checkpoint.pretrained_automedsam` for a converted backbone + a new
class prompt encoder); random weights for tests are :func:`automedsam_jax.core.init.random_model`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from . import backend
from .config import AutoMedSamConfig, ClassPromptConfig, LocaliserConfig
from .modeling import Sam
from .modeling.class_prompt_encoder import ClassPromptEncoder
from .modeling.localiser import Localiser
from .modeling.prompt_refiner import PromptRefiner


class AutoMedSamOutput(NamedTuple):
    """low_res_logits ``(B, 4g, 4g)``; iou ``(B,)``; the class prompt encoder's sparse ``(B, 2, C)``
    and dense ``(B, g, g, C)`` embeddings (None for a disabled branch) for the distillation loss."""

    low_res_logits: jax.Array
    iou: jax.Array
    sparse: jax.Array | None
    dense: jax.Array | None


class AutoMedSAM(nnx.Module):
    """``image_encoder``, ``prompt_encoder``, ``mask_decoder`` (SAM's names) and the parts of its
    prompt route (``cfg.prompt``, :mod:`automedsam_jax.core.routes`): ``class_prompt_encoder``
    (``class``; ``class_prmpt_encoder`` in the authors' checkpoints), ``localiser`` (``map``,
    beyond the paper), ``localiser`` and ``prompt_refiner`` (``refine``). A part the route does
    not use is None."""

    def __init__(self, cfg: AutoMedSamConfig, sam: Sam, *,
                 class_prompt_encoder: ClassPromptEncoder | None = None,
                 localiser: Localiser | None = None,
                 prompt_refiner: PromptRefiner | None = None):
        """Take over ``sam``'s three parts (pretrained weights) and add the route's parts
        (:func:`automedsam_jax.core.routes.new_parts` makes them for a config)."""
        if sam.config != cfg.sam:
            raise ValueError(f"backbone {sam.config.name!r} does not match config {cfg.sam.name!r}")
        self.config = cfg
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.class_prompt_encoder = class_prompt_encoder
        self.localiser = localiser
        self.prompt_refiner = prompt_refiner

    @classmethod
    def from_sam(cls, sam: Sam, class_prompt: ClassPromptConfig | None = ClassPromptConfig(),
                 seed: int = 0, localiser: LocaliserConfig | None = None,
                 prompt: str | None = None) -> "AutoMedSAM":
        """``sam``'s weights + fresh parts for the route ``prompt`` (default: ``map`` with a
        ``localiser``, else ``class``), drawn from ``seed``: the class prompt encoder with
        PyTorch's default init, a localiser with Flax's."""
        from .routes import model_config, new_parts

        cfg = model_config(sam.config, prompt or ("map" if localiser else "class"),
                           class_prompt, localiser)
        return cls(cfg, sam, **new_parts(cfg, seed))

    @classmethod
    def abstract(cls, cfg: AutoMedSamConfig) -> "AutoMedSAM":
        """A shape-only model (no FLOPs, no memory), to be filled from a checkpoint."""
        from .routes import new_parts

        return nnx.eval_shape(lambda: cls(cfg, Sam(cfg.sam, rngs=nnx.Rngs(0)),
                                          **new_parts(cfg, 0, abstract=True)))

    # -- parts ------------------------------------------------------------------------------
    def embed(self, images: jax.Array, dtype=jnp.float32) -> jax.Array:
        """``(B, S, S, 3)`` input-frame images → ``(B, g, g, C)`` float32 embeddings of the
        frozen encoder, computed in ``dtype``: :func:`embed_images`."""
        return embed_images(self, images, dtype)

    def teacher(self, boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Box-prompted MedSAM's embeddings for ``(B, 4)`` input-frame boxes: sparse
        ``(B, 2, C)`` and dense ``no_mask_embed`` ``(B, g, g, C)``, without gradient."""
        sparse, dense = self.prompt_encoder(boxes=boxes)
        return jax.lax.stop_gradient(sparse), jax.lax.stop_gradient(dense)

    def prompts(self, embeddings: jax.Array, class_ids: jax.Array, *,
                key: jax.Array | None = None, noise: jax.Array | None = None):
        """Class prompt encoder on ``(B, g, g, C)`` embeddings for ``(B,)`` class ids; see
        :meth:`ClassPromptEncoder.__call__` for ``key``/``noise``."""
        return self.class_prompt_encoder(embeddings, class_ids, key=key, noise=noise)

    def decode(self, embeddings: jax.Array, class_ids: jax.Array, *,
               key: jax.Array | None = None, noise: jax.Array | None = None) -> AutoMedSamOutput:
        """``(B, g, g, C)`` embeddings (cached or fresh) + class ids → masks and IoU.

        ``class_ids`` ``(B,)``: one class per embedding. ``(B, K)``: K classes per embedding
        (every class of a slice, in training and inference alike): each embedding is repeated
        K times and the B·K (slice, class) pairs are decoded as one batch, slice-major, so
        every output has B·K rows (``noise``, if given, is ``(B, K, g, g, C)``).

        bf16 ``embeddings`` (a model cast to bf16, :func:`with_dtype`) are decoded by
        :func:`.backend.bf16_compute` (natively, or on a CPU in float32 with bf16 matmul
        operands)."""
        if embeddings.dtype == jnp.bfloat16:
            return backend.bf16_compute(
                lambda m, e, n: m._decode(e, class_ids, key, n), self, embeddings, noise)
        return self._decode(embeddings, class_ids, key, noise)

    def _decode(self, embeddings, class_ids, key, noise) -> AutoMedSamOutput:
        if class_ids.ndim == 2:
            embeddings = jnp.repeat(embeddings, class_ids.shape[1], axis=0)
            class_ids = class_ids.reshape(-1)
            if noise is not None:
                noise = noise.reshape(-1, *noise.shape[2:])
        sparse, dense = self.prompts(embeddings, class_ids, key=key, noise=noise)
        low, iou = self._masks(embeddings, sparse, dense, class_ids.shape[0])
        return AutoMedSamOutput(low, iou, sparse, dense)

    def localise(self, embeddings: jax.Array) -> jax.Array:
        """The localiser's map: ``(B, g, g, C)`` embeddings → ``(B, g, g, K + 1)`` logits
        (channel 0 background); boxes come from it with
        :func:`~automedsam_jax.core.modeling.localiser.map_boxes`."""
        if self.localiser is None:
            raise ValueError(f"this AutoMedSAM (prompt route {self.config.prompt!r}) has no "
                             "localiser")
        return self.localiser(embeddings)

    def refine(self, embeddings: jax.Array, class_ids: jax.Array, boxes: jax.Array, *,
               key: jax.Array | None = None, noise: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
        """The refiner's prompts: ``(B, g, g, C)`` embeddings, ``(B,)`` class ids and ``(B, 4)``
        input-frame boxes → sparse ``(B, 2, C)`` and dense ``(B, g, g, C)``, starting from
        SAM's prompt encoder's embedding of each box
        (:class:`~automedsam_jax.core.modeling.prompt_refiner.PromptRefiner`)."""
        if self.prompt_refiner is None:
            raise ValueError(f"this AutoMedSAM (prompt route {self.config.prompt!r}) has no "
                             "prompt refiner")
        start = self.prompt_encoder(boxes=boxes)
        return self.prompt_refiner(embeddings, class_ids, boxes, start, key=key, noise=noise)

    def box_masks(self, embeddings: jax.Array, boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The backbone prompted with boxes: :func:`box_masks`."""
        return box_masks(self, embeddings, boxes)

    def _masks(self, embeddings, sparse, dense, n: int) -> tuple[jax.Array, jax.Array]:
        """Mask decoder on ``(n, g, g, C)`` embeddings for n prompt sets; a disabled branch
        (None) gets MedSAM's no-prompt embedding. → logits ``(n, 4g, 4g)``, IoU ``(n,)``."""
        no_sparse, no_dense = self.prompt_encoder()
        if sparse is None:
            sparse = jnp.broadcast_to(no_sparse, (n, *no_sparse.shape[1:]))
        if dense is None:
            dense = jnp.broadcast_to(no_dense, (n, *no_dense.shape[1:]))
        low, iou = self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                     multimask_output=False)
        return low[:, 0], iou[:, 0]

    def __call__(self, images: jax.Array, class_ids: jax.Array, *,
                 key: jax.Array | None = None, noise: jax.Array | None = None) -> AutoMedSamOutput:
        """``(B, S, S, 3)`` input-frame images, one class id each → :class:`AutoMedSamOutput`."""
        return self.decode(self.embed(images), class_ids, key=key, noise=noise)


def box_masks(model: AutoMedSAM | Sam, embeddings: jax.Array, boxes: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """A SAM-family backbone (a :class:`Sam`, or an AutoMedSAM's) prompted with boxes:
    ``(B, g, g, C)`` embeddings and ``(B, K, 4)`` input-frame boxes (``x0, y0, x1, y1``) →
    logits ``(B, K, 4g, 4g)`` and IoU ``(B, K)``, through SAM's prompt encoder and the mask
    decoder (one mask per box)."""
    b, k = boxes.shape[:2]
    sparse, dense = model.prompt_encoder(boxes=boxes.reshape(b * k, 4))
    low, iou = model.mask_decoder(jnp.repeat(embeddings, k, axis=0),
                                  model.prompt_encoder.get_dense_pe(), sparse, dense,
                                  multimask_output=False)
    return low[:, 0].reshape(b, k, *low.shape[2:]), iou[:, 0].reshape(b, k)


def cast_floating(tree, dtype):
    """Every floating leaf of ``tree`` (arrays, an ``nnx.State``) cast to ``dtype``."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                        else x, tree)


def with_dtype(module: nnx.Module, dtype) -> nnx.Module:
    """A copy of ``module`` whose floating variables are cast to ``dtype`` (``module`` itself
    when that is float32). Inside a traced function the cast is differentiable: gradients
    reach the float32 originals."""
    if jnp.dtype(dtype) == jnp.float32:
        return module
    graphdef, state = nnx.split(module)
    return nnx.merge(graphdef, cast_floating(state, dtype))


def embed_images(model: AutoMedSAM | Sam, images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """The one image-embedding path (training, the embedding cache, evaluation, the predictor):
    ``(B, S, S, 3)`` input-frame images → ``(B, g, g, C)`` float32 embeddings of the frozen
    image encoder of ``model`` (an :class:`AutoMedSAM` or a box-prompted :class:`Sam`),
    without gradient. ``dtype`` is the encoder's compute dtype: its float32 weights and the
    images are cast to it inside the call (float32: no cast); bf16 runs by
    :func:`.backend.bf16_compute` (natively, or on a CPU in float32 with bf16 matmul
    operands)."""
    encoder, images = with_dtype(model.image_encoder, dtype), images.astype(dtype)
    if jnp.dtype(dtype) == jnp.bfloat16:
        emb = backend.bf16_compute(lambda enc, x: enc(x), encoder, images)
    else:
        emb = encoder(images)
    return jax.lax.stop_gradient(emb.astype(jnp.float32))


def label_map(probs: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Per-class probabilities ``(..., K, H, W)`` → labels ``(..., H, W)`` int32: the class
    (1..K) of highest probability, 0 where none exceeds ``threshold``. Ties go to the lower id."""
    best = jnp.argmax(probs, axis=-3)
    return jnp.where(jnp.max(probs, axis=-3) > threshold, best + 1, 0).astype(jnp.int32)
