"""AutoMedSAM cost: FLOPs of one forward per backbone (XLA cost analysis) and the wall time of the
class prompt encoder's forward+backward, closed-form diffusion vs the literal T-step loop.

    python benchmarks/automedsam_cost.py                  # batch 1, T = 100, 5 timed repeats
    python benchmarks/automedsam_cost.py --batch 4 --repeats 3

FLOPs come from ``jax.jit(f).lower(...).compile().cost_analysis()`` on a shape-only model (no
weights needed); XLA counts a multiply-add as 2 FLOPs. Timings skip the compile call and block on
the result.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from automedsam_jax.core.automedsam import AutoMedSAM
from automedsam_jax.core.config import AutoMedSamConfig, ClassPromptConfig, SamConfig, ViTConfig
from automedsam_jax.core.backend import backend_options
from automedsam_jax.core.modeling import Sam
from automedsam_jax.core.modeling.class_prompt_encoder import (diffuse_stepwise,
                                                               init_class_prompt_encoder)

BACKBONES = ("litemedsam", "medsam_vit_b")


def flops(fn, *args) -> float:
    """XLA's count for ``fn`` with the layers' native ops (``backend_options(cpu_rewrites=False)``):
    the model as
    written, the same on every backend, whatever CPU formulation runs."""
    with backend_options(cpu_rewrites=False):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def encoder_flops(cfg: SamConfig, batch: int = 1) -> float:
    """XLA's FLOPs of the image encoder alone on a shape-only model (per ``batch`` images)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Sam(cfg, rngs=nnx.Rngs(0))).image_encoder)
    images = jax.ShapeDtypeStruct((batch, cfg.image_size, cfg.image_size, 3), jnp.float32)
    return flops(lambda s, x: nnx.merge(graphdef, s)(x), state, images)


def vit_encoder_flops(enc: ViTConfig) -> float:
    """Analytic FLOPs (2 per multiply-add, matmuls and convolutions only) of one image through
    SAM's ViT encoder, as the code computes it: windowed blocks run their qkv/proj projections and
    attention on the grid zero-padded to whole windows (64 → 70 at window 14), global blocks on
    the g² tokens; the decomposed relative-position terms are counted; norms, softmax and GELU
    are not. ViT-B at 1024²: ≈ 0.97 TFLOP."""
    g, D, hidden = enc.embedding_size, enc.embed_dim, int(enc.embed_dim * enc.mlp_ratio)
    n = g * g
    total = 2 * n * (enc.patch_size ** 2 * 3) * D                       # patch embedding
    for i in range(enc.depth):
        if i in enc.global_attn_indexes:
            tokens, keys, side = n, n, g
        else:
            w = enc.window_size
            tokens, keys, side = (-(-g // w) * w) ** 2, w * w, w
        total += 2 * tokens * D * 3 * D + 2 * tokens * D * D              # qkv, proj
        total += 2 * 2 * tokens * keys * D                               # q·kᵀ, p·v
        total += 2 * 2 * tokens * side * D                               # rel-pos h and w
        total += 2 * 2 * n * D * hidden                                  # MLP
    total += 2 * n * D * enc.out_chans + 2 * n * enc.out_chans ** 2 * 9  # neck 1×1, 3×3
    return float(total)


def forward_flops(preset: str, batch: int) -> dict[str, float]:
    """GFLOPs of the image encoder, and of the rest (class prompt encoder + mask decoder)."""
    cfg = AutoMedSamConfig(SamConfig.preset(preset))
    graphdef, state = nnx.split(AutoMedSAM.abstract(cfg))
    S, g, C = cfg.sam.image_size, cfg.sam.embedding_size, cfg.sam.decoder.transformer_dim
    images = jax.ShapeDtypeStruct((batch, S, S, 3), jnp.float32)
    emb = jax.ShapeDtypeStruct((batch, g, g, C), jnp.float32)
    ids = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.random.key(0)
    whole = flops(lambda s, x, c: nnx.merge(graphdef, s)(x, c, key=key).low_res_logits,
                  state, images, ids)
    decode = flops(lambda s, e, c: nnx.merge(graphdef, s).decode(e, c, key=key).low_res_logits,
                   state, emb, ids)
    prompts = flops(lambda s, e, c: nnx.merge(graphdef, s).prompts(e, c, key=key),
                    state, emb, ids)
    return {"total": whole / 1e9, "image encoder": (whole - decode) / 1e9,
            "class prompt encoder": prompts / 1e9, "mask decoder": (decode - prompts) / 1e9}


def encoder_step_time(batch: int, repeats: int, stepwise: bool) -> float:
    """Seconds per forward+backward of the full-size class prompt encoder."""
    cfg = ClassPromptConfig()
    model = init_class_prompt_encoder(cfg, 256, 64)
    graphdef, params = nnx.split(model)
    emb = jax.random.normal(jax.random.key(1), (batch, 64, 64, 256))
    ids = jnp.arange(1, batch + 1, dtype=jnp.int32)

    def loss(params, emb, ids, key):
        m = nnx.merge(graphdef, params)
        if stepwise:
            x = diffuse_stepwise(emb, m.class_map(ids), key, cfg.timesteps)
            sparse, dense = m.reverse(x, ids)
        else:
            sparse, dense = m(emb, ids, key=key)
        return jnp.mean(sparse ** 2) + jnp.mean(dense ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(params, emb, ids, jax.random.key(0)))  # compile
    t0 = time.perf_counter()
    for i in range(repeats):
        jax.block_until_ready(step(params, emb, ids, jax.random.key(i)))
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, batch {args.batch}")
    for preset in BACKBONES:
        parts = forward_flops(preset, args.batch)
        print(f"{preset:>13}: " + ", ".join(f"{k} {v:.1f} GFLOPs" for k, v in parts.items()))
        enc = SamConfig.preset(preset).encoder
        if isinstance(enc, ViTConfig):
            print(f"{'':>13}  analytic ViT encoder (matmuls only): "
                  f"{args.batch * vit_encoder_flops(enc) / 1e9:.1f} GFLOPs")
    for name, stepwise in (("closed form", False), ("T-step loop", True)):
        t = encoder_step_time(args.batch, args.repeats, stepwise)
        print(f"class prompt encoder fwd+bwd, {name}: {1e3 * t:.1f} ms")


if __name__ == "__main__":
    main()
