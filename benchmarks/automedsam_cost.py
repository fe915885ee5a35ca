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
from automedsam_jax.core.modeling.class_prompt_encoder import (diffuse_stepwise,
                                                               init_class_prompt_encoder)
from frameworks import flops, vit_encoder_flops

BACKBONES = ("litemedsam", "medsam_vit_b")


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
