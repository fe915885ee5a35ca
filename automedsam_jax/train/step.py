"""The training step: one ``jax.jit`` over a 1-D ``data`` mesh of every device
(docs/method.md#scale-and-resumption).

The batch is sharded on ``data``, the state is replicated. The loss is the mean over the
*global* batch and the gradient is taken of that global mean, so XLA's partitioner inserts the
one cross-device reduction itself: gradients are averaged exactly once (no ``pmap``, no
``shard_map`` whose replicated-parameter gradients would already be summed before a ``pmean``).
Only the trainable variables (:func:`~automedsam_jax.train.optim.trainable`) are differentiated;
the frozen image encoder runs inside the step under ``stop_gradient``, or is skipped when the batch
carries cached ``embedding``\\ s.

What the loss is, is the model's prompt route's (:meth:`automedsam_jax.core.routes.Route.loss`).
Two batch layouts: one class per slice (the paper: ``class_id`` ``(B,)``, targets ``(B, L, L)``)
or every class of each slice (``class_id`` ``(B, K)``, targets ``(B, K, L, L)``, ``present``
``(B, K)``): the slice's one embedding is decoded for all K classes in the same step — the
B·K (slice, class) pairs are flattened into one batch, so the loss is the mean over pairs (see
:mod:`automedsam_jax.core.losses` for what absent classes contribute; one-class batches may carry
``present`` ``(B,)`` too, for negatives). Diffusion noise comes from an explicit key folded with
the step number (or from the batch's ``noise``, for benchmarks that must feed two frameworks the
same draws). The state argument is donated; metrics stay on the device.

Mixed precision: ``encoder_dtype`` is the compute dtype of the frozen encoder, ``compute_dtype``
that of the trained part (class prompt encoder and mask decoder, forward and backward). Both
cast float32 weights to the compute dtype inside the step; parameters, optimizer state,
gradients, the distillation teacher and the loss stay float32.

    mesh = data_mesh()
    state, frozen, graphdef = init_state(trainee, tx, mesh)
    step = make_train_step(graphdef, tx, mesh, cached=False)   # or encoder_dtype/compute_dtype=bf16
    for batch in dispatch_ahead(batches, lambda b: shard_batch(b, mesh)):  # core.pipelining
        state, metrics = step(state, frozen, batch, key)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..core.automedsam import AutoMedSamOutput, embed_images
from ..core.routes import class_prompt, route_of
from .optim import Trainee, trainable

STEP_KEYS = ("class_id", "mask", "box", "dist")
"""Batch entries the step reads, besides ``image`` (online) or ``embedding`` (cached)."""
OPTIONAL_KEYS = ("present", "noise", "grid_label")
"""Batch entries the step reads when present: the all-classes layout's ``present``, explicit
diffusion ``noise`` (benchmarks, tests) and the localiser's target ``grid_label``."""


def data_mesh(devices=None) -> Mesh:
    """1-D mesh ``("data",)`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def split_trainee(trainee: Trainee):
    """``(graphdef, trainable, frozen)``: the trained variables and everything else."""
    return nnx.split(trainee, trainable(trainee), ...)


def init_state(trainee: Trainee, tx: optax.GradientTransformation, mesh: Mesh):
    """Replicated ``state`` (``{"params", "opt", "step"}``), ``frozen`` variables, graphdef."""
    graphdef, params, frozen = split_trainee(trainee)
    state = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    rep = replicated(mesh)
    return jax.device_put(state, rep), jax.device_put(frozen, rep), graphdef


def shard_batch(batch: dict[str, Any], mesh: Mesh, cached: bool = False) -> dict[str, jax.Array]:
    """This process's share of a batch (numpy) → global arrays sharded on ``data`` (with the
    batch's ``noise`` too when it has one)."""
    keys = ("embedding" if cached else "image",) + STEP_KEYS + tuple(
        k for k in OPTIONAL_KEYS if k in batch)
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k]))
            for k in keys}


def frozen_embeddings(model, images: jax.Array | None, embeddings: jax.Array | None,
                      dtype=jnp.float32) -> jax.Array:
    """``embeddings`` (cached) when given, else :func:`~automedsam_jax.core.automedsam.
    embed_images` of ``images`` in ``dtype``; no gradient either way."""
    if embeddings is not None:
        return jax.lax.stop_gradient(embeddings)
    return embed_images(model, images, dtype)


def forward(model, images: jax.Array | None, class_ids: jax.Array, *,
            embeddings: jax.Array | None = None, key: jax.Array | None = None,
            noise: jax.Array | None = None, encoder_dtype=jnp.float32,
            compute_dtype=jnp.float32) -> AutoMedSamOutput:
    """The class route's forward (the paper) with the frozen encoder in ``encoder_dtype``
    (skipped when ``embeddings`` are given) and the class prompt encoder and decoder in
    ``compute_dtype``; outputs float32. ``class_ids`` ``(B, K)`` decodes every class of each
    slice against its one embedding (:meth:`AutoMedSAM.decode`): outputs have B·K rows,
    slice-major."""
    emb = frozen_embeddings(model, images, embeddings, encoder_dtype)
    return class_prompt.decode(model, emb, class_ids, key=key, noise=noise,
                               compute_dtype=compute_dtype)


def loss_and_terms(trainee: Trainee, batch: dict, key: jax.Array, cached: bool,
                   encoder_dtype=jnp.float32, compute_dtype=jnp.float32,
                   negatives: bool = False):
    """The loss of one batch, (total, terms): the frozen embeddings (the batch's cached
    ``embedding`` or the encoder on its ``image``), then the model's prompt route's loss
    (:meth:`automedsam_jax.core.routes.Route.loss`; ``key`` draws its noise)."""
    model = trainee.model
    emb = frozen_embeddings(model, batch.get("image"), batch.get("embedding") if cached
                            else None, encoder_dtype)
    return route_of(model).loss(trainee, emb, batch, key, compute_dtype=compute_dtype,
                                negatives=negatives)


def _step(graphdef, tx, cached, encoder_dtype, compute_dtype, negatives, state, frozen, batch,
          key):
    noise_key = jax.random.fold_in(key, state["step"])

    def loss_fn(params):
        trainee = nnx.merge(graphdef, params, frozen)
        return loss_and_terms(trainee, batch, noise_key, cached, encoder_dtype, compute_dtype,
                              negatives)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    with jax.named_scope("optimizer"):  # names the update's ops in profiles
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()},
               "grad_norm": grad_norm}
    if "loss_weights" in params and "sigma" in params["loss_weights"]:
        sigma = params["loss_weights"]["sigma"][...]
        for i in range(sigma.shape[0]):
            metrics[f"sigma/{i}"] = sigma[i]
    return {"params": params, "opt": opt, "step": state["step"] + 1}, metrics


def make_train_step(graphdef, tx: optax.GradientTransformation, mesh: Mesh, *,
                    cached: bool = False, encoder_dtype=jnp.float32, compute_dtype=jnp.float32,
                    negatives: bool = False):
    """``step(state, frozen, batch, key) -> (state, metrics)``, jitted on ``mesh``; ``state``
    is donated. ``cached``: the batch holds ``embedding`` (B, g, g, C) instead of ``image``.
    ``encoder_dtype``/``compute_dtype``: see the module docstring. ``negatives``: absent
    classes of an all-classes batch count in the CE term (:mod:`automedsam_jax.core.losses`)."""
    rep, data = replicated(mesh), batch_sharding(mesh)

    def step(state, frozen, batch, key):
        return _step(graphdef, tx, cached, encoder_dtype, compute_dtype, negatives, state,
                     frozen, batch, key)

    return jax.jit(step, in_shardings=(rep, rep, data, rep), out_shardings=(rep, rep),
                   donate_argnums=(0,))


def make_loss_fn(graphdef, mesh: Mesh, *, cached: bool = False, encoder_dtype=jnp.float32,
                 compute_dtype=jnp.float32, negatives: bool = False):
    """``loss(state, frozen, batch, key) -> (total, terms)`` without an update (tests, eval)."""
    rep, data = replicated(mesh), batch_sharding(mesh)

    def loss(state, frozen, batch, key):
        trainee = nnx.merge(graphdef, state["params"], frozen)
        return loss_and_terms(trainee, batch, jax.random.fold_in(key, state["step"]), cached,
                              encoder_dtype, compute_dtype, negatives)

    return jax.jit(loss, in_shardings=(rep, rep, data, rep), out_shardings=rep)


def make_embed_fn(graphdef, mesh: Mesh, encoder_dtype=jnp.float32):
    """``embed(params, frozen, images) -> embeddings`` sharded on ``data`` (for the cache):
    :func:`~automedsam_jax.core.automedsam.embed_images` jitted on ``mesh``."""
    rep, data = replicated(mesh), batch_sharding(mesh)

    def embed(params, frozen, images):
        trainee = nnx.merge(graphdef, params, frozen)
        return embed_images(trainee.model, images, encoder_dtype)

    return jax.jit(embed, in_shardings=(rep, rep, data), out_shardings=data)


def set_learning_rate(state: dict, lr: float) -> dict:
    """Set the ``learning_rate`` of an ``optax.inject_hyperparams`` optimizer state."""
    opt = state["opt"]
    hp = opt.hyperparams
    old = hp["learning_rate"]
    hp["learning_rate"] = jax.device_put(jnp.asarray(lr, old.dtype), old.sharding)
    return state


def learning_rate(state: dict) -> float:
    """The current learning rate (from this process's shard: works on several hosts)."""
    return float(state["opt"].hyperparams["learning_rate"].addressable_data(0))
