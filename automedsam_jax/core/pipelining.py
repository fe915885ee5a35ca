"""Dispatch the next item before collecting this one: the one pipelining helper.

JAX dispatches device work asynchronously, so a loop that starts item i + 1 (a host→device copy,
a jitted model call) before it collects item i overlaps its host work with the device. Training
(:mod:`automedsam_jax.train`: batches sharded ahead of the step), evaluation
(:func:`automedsam_jax.inference.segmenter.segment_slices`: batch i + 1 dispatched before
batch i is brought back to the original frame) and the embedding cache
(:mod:`automedsam_jax.data.embedding_cache`: chunk k + 1 dispatched before chunk k is written)
all use :func:`dispatch_ahead`.

Imports only the standard library (it sits in the lowest layer, below everything that uses it).
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Callable, Iterable, Iterator


def dispatch_ahead(items: Iterable[Any], fn: Callable[[Any], Any], size: int = 2) -> Iterator[Any]:
    """``fn(item)`` for each item, in order; when one is handed out, ``fn`` has already been
    applied to the next ``size`` items (fewer at the end). With ``fn`` starting asynchronous
    work (a host→device copy, a jitted call), that work runs while the caller handles the
    result before it. ``size=0`` applies ``fn`` only when the result is asked for."""
    if size < 0:
        raise ValueError(f"dispatch_ahead size must be >= 0, got {size}")
    it = iter(items)
    queue = collections.deque(fn(x) for x in itertools.islice(it, size))
    while True:
        for x in itertools.islice(it, 1):
            queue.append(fn(x))
        if not queue:
            return
        yield queue.popleft()
