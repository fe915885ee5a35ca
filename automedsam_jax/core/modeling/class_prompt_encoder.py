"""AutoMedSAM's diffusion class prompt encoder (docs/method.md#class-prompt-encoder) in Flax
NNX, channels-last.

Image embedding ``F`` ``(B, g, g, C)`` (g = 64, C = 256 at full size) + class id c → sparse
``(B, 2, C)`` and dense ``(B, g, g, C)`` prompt embeddings for SAM's mask decoder. Every layer
keeps the g×g grid.

Names follow the authors' PyTorch ``DiffusionModel`` (``fc_label``, ``unet.enc1`` …
``unet.sparse_dec2``), so their checkpoints convert by leaf renames; see
``automedsam_references/torch_automedsam.py`` for the PyTorch definition with their defects fixed (swapped
outputs, ``.squeeze()`` at batch size 1, integer label concatenated without a cast).

A fresh encoder for training comes from :func:`init_class_prompt_encoder`: PyTorch's default
init (what the authors trained from), drawn with NumPy on the host.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..config import ClassPromptConfig
from .common import ReLU, Sequential, conv2d, linear


def diffusion_scale(timesteps: int) -> float:
    """s with s² = Σ_{t=1..T} 1/(t+1)²: the std of the accumulated noise (√0.635 at T = 100)."""
    return sum(1.0 / (t + 1) ** 2 for t in range(1, timesteps + 1)) ** 0.5


def diffuse(embedding: jax.Array, class_map: jax.Array, timesteps: int,
            noise: jax.Array | None) -> jax.Array:
    """Closed-form forward diffusion: x_T = F + T·P(c) + s·ε.

    embedding ``(B, g, g, C)``; class_map P(c) ``(B, g, g, 1)`` (added to every channel);
    noise ε ``(B, g, g, C)`` standard normal, or None for the noise-free mean.
    """
    x = embedding + timesteps * class_map
    return x if noise is None else x + diffusion_scale(timesteps) * noise


def diffuse_stepwise(embedding: jax.Array, class_map: jax.Array, key: jax.Array,
                     timesteps: int) -> jax.Array:
    """The literal T-step loop, x ← x + ε_t/(t+1) + P(c) for t = T…1 with T fresh draws.

    Same distribution as :func:`diffuse`; kept as its reference and for the cost benchmark.
    """
    def step(x, t_key):
        t, k = t_key
        return x + jax.random.normal(k, x.shape, x.dtype) / (t + 1) + class_map, None

    ts = jnp.arange(timesteps, 0, -1, dtype=embedding.dtype)
    x, _ = jax.lax.scan(step, embedding, (ts, jax.random.split(key, timesteps)))
    return x


def _double_conv(cin: int, mid: int, cout: int, *, rngs: nnx.Rngs) -> Sequential:
    """Conv3×3 → ReLU → Conv3×3 → ReLU (indices 0–3 as in PyTorch's ``nn.Sequential``)."""
    return Sequential([conv2d(cin, mid, 3, padding=1, rngs=rngs), ReLU(),
                       conv2d(mid, cout, 3, padding=1, rngs=rngs), ReLU()])


class GlobalAvgPool(nnx.Module):
    """``nn.AdaptiveAvgPool2d(1)`` on NHWC: ``(B, H, W, C) → (B, 1, 1, C)``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.mean(axis=(1, 2), keepdims=True)


class Sigmoid(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x)


def pool_halves(x: jax.Array) -> jax.Array:
    """``nn.AdaptiveAvgPool2d((2, 1))`` then tokens: ``(B, H, W, C) → (B, 2, C)``, the means of
    the top and bottom halves of the rows (overlapping by one row when H is odd, as PyTorch)."""
    h = x.shape[1]
    bounds = [(0, math.ceil(h / 2)), (h // 2, h)]
    return jnp.stack([x[:, a:b].mean(axis=(1, 2)) for a, b in bounds], axis=1)


class ClassPromptUNet(nnx.Module):
    """The encoder (enc1, enc2, middle) and the dense/sparse decoders with skip connections;
    ``extra`` more input channels for the refiner's box map (0: the paper)."""

    def __init__(self, cfg: ClassPromptConfig, embed_dim: int, *, rngs: nnx.Rngs,
                 extra: int = 0):
        w1, w2, w3 = cfg.widths
        self.enc1 = _double_conv(embed_dim + 1 + extra, w1, w1, rngs=rngs)
        self.enc2 = _double_conv(w1, w2, w2, rngs=rngs)
        self.middle = _double_conv(w2, w3, w2, rngs=rngs)
        if cfg.has_dense:
            self.dense_attention = conv2d(w2 + 1, w2, 1, rngs=rngs)
            self.dense_dec1 = _double_conv(2 * w2, w2, w1, rngs=rngs)
            self.dense_dec2 = _double_conv(2 * w1, w1, embed_dim, rngs=rngs)
        if cfg.has_sparse:
            self.sparse_attention = Sequential([GlobalAvgPool(), conv2d(w2 + 1, w2, 1, rngs=rngs),
                                                Sigmoid()])
            self.sparse_dec1 = _double_conv(2 * w2, w2, w1, rngs=rngs)
            self.sparse_dec2 = _double_conv(2 * w1, w1, embed_dim, rngs=rngs)
        self.config = cfg

    def __call__(self, z: jax.Array, class_channel: jax.Array) -> tuple[jax.Array | None,
                                                                        jax.Array | None]:
        """z ``(B, g, g, C+1)``, the attention's class channel ``(B, g, g, 1)`` (the raw id
        broadcast, or P(c)) → dense ``(B, g, g, C)`` and the sparse branch's map
        ``(B, g, g, C)`` (None for a disabled branch)."""
        e1 = self.enc1(z)
        e2 = self.enc2(e1)
        m = self.middle(e2)
        mc = jnp.concatenate([m, class_channel.astype(m.dtype)], axis=-1)

        def decode(attention, dec1, dec2):
            d1 = dec1(jnp.concatenate([m * attention, e2], axis=-1))
            return dec2(jnp.concatenate([d1, e1], axis=-1))

        dense = sparse = None
        if self.config.has_dense:
            dense = decode(self.dense_attention(mc), self.dense_dec1, self.dense_dec2)
        if self.config.has_sparse:
            sparse = decode(self.sparse_attention(mc), self.sparse_dec1, self.sparse_dec2)
        return dense, sparse


class ClassPromptEncoder(nnx.Module):
    """Class id + image embedding → (sparse ``(B, 2, C)``, dense ``(B, g, g, C)``) prompts.

    A disabled branch (``cfg.branches``) returns None;
    :class:`~automedsam_jax.core.automedsam.AutoMedSAM`
    replaces it with MedSAM's no-prompt output. ``extra`` input maps ``(B, g, g, extra)`` join
    z (the refiner's box map, :class:`~.prompt_refiner.PromptRefiner`; 0: the paper).
    """

    def __init__(self, cfg: ClassPromptConfig, embed_dim: int, grid: int, *, rngs: nnx.Rngs,
                 extra: int = 0):
        cfg.check()
        self.config = cfg
        self.grid = grid
        if cfg.class_embedding == "learned":
            # Row c is class c's g² map; row 0 (background) is never looked up.
            self.class_embed = nnx.Embed(cfg.num_classes + 1, grid * grid, rngs=rngs)
            # The attention's class channel: one learned value per class, starting at the id
            # itself (the paper's channel). A per-pixel map there would average to ≈ 0 in the
            # sparse branch's global pooling and carry no class.
            self.class_value = nnx.Param(jnp.arange(cfg.num_classes + 1, dtype=jnp.float32))
        else:
            self.fc_label = linear(1, grid * grid, rngs=rngs)
        self.unet = ClassPromptUNet(cfg, embed_dim, rngs=rngs, extra=extra)

    def class_map(self, class_id: jax.Array) -> jax.Array:
        """P(c): ``(B,)`` class ids → ``(B, g, g, 1)``, through ``Linear(1 → g²)`` (scalar) or
        the class's row of the learned table, in the layer's dtype (float32, or bfloat16 under
        a mixed-precision cast of the module). Learned: ids outside 1..K are clipped (jnp.take)
        — callers validate ids against the model's class names."""
        if self.config.class_embedding == "learned":
            proj = self.class_embed(class_id.astype(jnp.int32))
        else:
            proj = self.fc_label(class_id.astype(self.fc_label.kernel.dtype)[:, None])
        return proj.reshape(-1, self.grid, self.grid, 1)

    def class_channel(self, class_id: jax.Array, class_map: jax.Array) -> jax.Array:
        """The attention's class channel ``(B, g, g, 1)``: the raw id broadcast (scalar,
        docs/method.md#class-prompt-encoder step 4) or the class's learned value broadcast
        (learned; initialised to the id)."""
        if self.config.class_embedding == "learned":
            value = jnp.take(self.class_value[...], class_id.astype(jnp.int32))
        else:
            value = class_id.astype(jnp.float32)
        return jnp.broadcast_to(value.astype(class_map.dtype)[:, None, None, None],
                                class_map.shape)

    def __call__(self, embedding: jax.Array, class_id: jax.Array, *,
                 key: jax.Array | None = None, noise: jax.Array | None = None,
                 extra: jax.Array | None = None
                 ) -> tuple[jax.Array | None, jax.Array | None]:
        """Prompt embeddings for ``class_id`` ``(B,)`` (ints 1..K) on ``embedding`` ``(B, g, g, C)``.

        Noise of the forward diffusion: ``noise`` (standard normal ``(B, g, g, C)``) if given, else
        drawn from ``key``; with neither, the noise-free mean x_T = F + T·P(c) (deterministic
        evaluation; pass a fixed key instead to see the training distribution). Ignored when
        ``cfg.diffusion`` is False (x_T = F). ``extra``: the ``(B, g, g, extra)`` maps of an
        encoder built with ``extra`` channels.
        """
        cfg = self.config
        x = embedding
        if cfg.diffusion:
            if noise is None and key is not None:
                noise = jax.random.normal(key, embedding.shape, embedding.dtype)
            x = diffuse(embedding, self.class_map(class_id), cfg.timesteps, noise)
        return self.reverse(x, class_id, extra)

    def reverse(self, x_t: jax.Array, class_id: jax.Array, extra: jax.Array | None = None
                ) -> tuple[jax.Array | None, jax.Array | None]:
        """The two-branch reverse part (paper §3.2.2) on the diffused ``x_t`` ``(B, g, g, C)``:
        z = [x_T; P(c)] (and the ``extra`` maps) through the UNet, sparse tokens pooled from the
        sparse branch."""
        p = self.class_map(class_id).astype(x_t.dtype)
        z = jnp.concatenate([x_t, p] + ([] if extra is None else [extra.astype(x_t.dtype)]),
                            axis=-1)
        dense, sparse_map = self.unet(z, self.class_channel(class_id, p))
        sparse = None if sparse_map is None else pool_halves(sparse_map)
        return sparse, dense


def _torch_default_init(module: nnx.Module, seed: int) -> None:
    """PyTorch's default init for every ``nnx.Conv``/``nnx.Linear``/``nnx.Embed`` of ``module``,
    in place: weight and bias ~ U(±1/√fan_in), fan_in = input channels × kernel area
    (``kaiming_uniform_`` with a = √5); embeddings ~ N(0, 1) (``nn.Embedding``). Drawn with
    NumPy, so it works on abstract modules and compiles nothing (XLA's truncated-normal
    initializers take ~1 s each to compile on CPU)."""
    rng = np.random.default_rng(seed)
    for _, layer in nnx.iter_graph(module):
        if isinstance(layer, nnx.Embed):
            shape = layer.embedding.shape
            layer.embedding.set_value(jnp.asarray(rng.standard_normal(shape), jnp.float32))
        elif isinstance(layer, (nnx.Conv, nnx.Linear)):
            kshape = layer.kernel.shape
            bound = 1.0 / math.sqrt(math.prod(kshape[:-1]))
            layer.kernel.set_value(jnp.asarray(rng.uniform(-bound, bound, kshape), jnp.float32))
            layer.bias.set_value(jnp.asarray(rng.uniform(-bound, bound, kshape[-1:]), jnp.float32))


def init_class_prompt_encoder(cfg: ClassPromptConfig, embed_dim: int, grid: int,
                              seed: int = 0, extra: int = 0) -> ClassPromptEncoder:
    """A fresh :class:`ClassPromptEncoder` with PyTorch's default init (:func:`_torch_default_init`);
    a learned class channel starts at the ids."""
    module = nnx.eval_shape(lambda: ClassPromptEncoder(cfg, embed_dim, grid, rngs=nnx.Rngs(0),
                                                       extra=extra))
    _torch_default_init(module, seed)
    if cfg.class_embedding == "learned":
        module.class_value.set_value(jnp.arange(cfg.num_classes + 1, dtype=jnp.float32))
    return module
