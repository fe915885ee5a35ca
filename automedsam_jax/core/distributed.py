"""Several processes (hosts): when to call ``jax.distributed.initialize()``, reading replicated
arrays back on any of them, and gathering small results from all of them."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

import jax
import numpy as np
from jax.experimental import multihost_utils


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """The ``--distributed`` option of every command that runs on several hosts: train's
    ``RunConfig`` derives from it (keyword-only: after the deriving class's own fields),
    evaluate's config nests it."""

    distributed: Literal["auto", "on", "off"] = "auto"
    """multi-host: call jax.distributed.initialize() and share the work over the processes
    (auto: when the environment names a coordinator, Slurm/Open MPI tasks or several TPU hosts;
    on: always)"""


def multi_process_env() -> bool:
    """Whether the environment describes a multi-process job: an explicit coordinator
    (``JAX_COORDINATOR_ADDRESS``), Slurm or Open MPI with several tasks, or a multi-host Cloud
    TPU VM (``TPU_WORKER_HOSTNAMES`` lists several hosts)."""
    env = os.environ
    return ("JAX_COORDINATOR_ADDRESS" in env or int(env.get("SLURM_NTASKS", "1")) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
            or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def maybe_initialize_distributed(mode: str = "auto") -> None:
    """``jax.distributed.initialize()`` when ``mode`` is ``"on"``, or ``"auto"`` and
    :func:`multi_process_env`. JAX detects TPU, Slurm and Open MPI jobs itself; elsewhere set
    ``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``."""
    if mode == "on" or (mode == "auto" and multi_process_env()):
        env = os.environ
        jax.distributed.initialize(
            num_processes=int(env["JAX_NUM_PROCESSES"]) if "JAX_NUM_PROCESSES" in env else None,
            process_id=int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)


def to_host(tree):
    """Replicated global arrays → numpy, from this process's first shard (works on several
    hosts, where a global array is not fully addressable)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))
                        if isinstance(x, jax.Array) else x, tree)


def allgather_json(obj) -> list:
    """Every process's JSON-able ``obj``, in process order (``[obj]`` in a one-process job): the
    bytes go through a device all-gather, so no shared file system is needed."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64)))
    sizes = sizes.reshape(-1)
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[:data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(buf))
    return [json.loads(bytes(gathered[i, :sizes[i]])) for i in range(len(sizes))]


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array sharded on its first axis, in order (the whole
    array in a one-process job)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}
    return np.concatenate([np.asarray(shards[k]) for k in sorted(shards)])
