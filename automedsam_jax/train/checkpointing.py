"""Resumable checkpoints with Orbax's ``CheckpointManager`` (atomic: written to a temporary
directory, renamed when complete; the latest ``keep`` are kept).

Each checkpoint holds ``state`` (trained parameters incl. σ, optimizer state with its learning
rate, step — the leaves of the step's state pytree) and ``meta`` (JSON: epoch bookkeeping, the
plateau scheduler, the base PRNG key, and the grain iterator state). Frozen variables are not
saved: they come from ``--weights``.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..io.paths import as_path


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = as_path(directory, absolute=True)  # a local path or a URL (gs://)
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        leaves = {str(i): x for i, x in enumerate(jax.tree.leaves(state))}
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore(self, state_like, step: int | None = None):
        """``(state, meta)`` of ``step`` (default: latest), with the structure and shardings
        of ``state_like``."""
        step = self.manager.latest_step() if step is None else step
        leaves, treedef = jax.tree.flatten(state_like)
        target = {str(i): jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                  for i, x in enumerate(leaves)}
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        restored = [out.state[str(i)] for i in range(len(leaves))]
        return jax.tree.unflatten(treedef, restored), out.meta

    def close(self):
        self.manager.close()


def key_to_json(key: jax.Array) -> list[int]:
    return np.asarray(jax.random.key_data(key)).tolist()


def key_from_json(data) -> jax.Array:
    return jax.random.wrap_key_data(np.asarray(data, np.uint32))
