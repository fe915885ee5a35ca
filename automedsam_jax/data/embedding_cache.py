"""Cached image embeddings, stored on disk: the encoder is frozen, so each training slice is
embedded once per variant the pipeline can produce — flips (none, horizontal, vertical, both) ×
augmented variants (:mod:`.augment`, variant 0 = the stored slice) — and training reads them
back instead of running the encoder. The cached images are made exactly as the training
transform makes them: both call :func:`.sample.training_view` (augment, then flip in the
original frame, then ``preprocess_image``).

Layout of one cache, ``<root>/<key>/``:

``shard-PPPPP-of-NNNNN.array_record``  one record per embedding (raw ``(g, g, C)`` bytes in the
                                       storage dtype), written by process P of N
``shard-PPPPP-of-NNNNN.json``          that shard's keys ``[case, z, hflip, vflip, variant]``
``cache.json``                         the :class:`CacheSpec` and the shard sizes; written last,
                                       so a cache without it is incomplete and is rebuilt

The key is a hash of everything that changes an embedding (:class:`CacheSpec`: the dataset and
its slice count, the backbone config with its frame, a hash of the encoder's weights, the
encoder's compute dtype, flips, augmentation and its seed, the storage dtype), so a second run
reuses the cache (no embedding at all) and a changed input makes a new one. Each process embeds
its share of the slices (slice i goes to process i mod N) in lockstep with the others, and writes
its own shard; every process then reads every shard (the cache root must be storage they all
see). Reading goes through grain's ``ArrayRecordDataSource``, one batch at a time, so memory is
bounded whatever the dataset size; the storage dtype is float32 (exact) or bfloat16 (half the
disk and reads). The disk is checked for room before anything is embedded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from ..core.config import FrameConfig
from ..core.distributed import local_rows
from ..core.pipelining import dispatch_ahead
from ..io.errors import UsageError
from ..io.paths import write_atomic
from .augment import AugmentConfig
from .pipeline import as_text
from .sample import pixel_spacing, training_view

FLIP_VARIANTS = ((False, False), (True, False), (False, True), (True, True))
STORAGE_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(jnp.bfloat16)}
SPEC_FILE = "cache.json"


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """Everything that changes a cached embedding (the cache's identity)."""

    dataset: str              # the built dataset (tfds full name) ...
    num_slices: int           # ... and how many training slices the run draws from
    backbone: dict            # SamConfig.to_dict(): encoder and frame
    weights: str              # sha256 of the image encoder's variables
    encoder_dtype: str
    flips: bool
    augment: dict
    seed: int | None          # the augmentation seed (None without augmentation)
    dtype: str                # storage dtype: float32 or bfloat16
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, model, dataset: str, num_slices: int, *, encoder_dtype: str = "float32",
           flips: bool = True, augment: AugmentConfig = AugmentConfig(), seed: int = 0,
           dtype: str = "float32") -> "CacheSpec":
        """The spec of ``model``'s (an AutoMedSAM) embeddings of ``num_slices`` training
        slices of ``dataset``, with the training pipeline's flips, augmentation and seed."""
        if dtype not in STORAGE_DTYPES:
            raise UsageError(f"cache dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        sam = model.config.sam
        return cls(dataset=dataset, num_slices=num_slices, backbone=sam.to_dict(),
                   weights=weights_hash(model.image_encoder), encoder_dtype=encoder_dtype,
                   flips=flips, augment=dataclasses.asdict(augment),
                   seed=seed if augment.variants else None, dtype=dtype,
                   shape=(sam.embedding_size, sam.embedding_size, sam.decoder.transformer_dim))

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def variants(self) -> list[tuple[int, bool, bool]]:
        """``(augmentation variant, hflip, vflip)`` of every embedding of one slice."""
        flips = FLIP_VARIANTS if self.flips else FLIP_VARIANTS[:1]
        return [(v, hf, vf) for v in range(self.augment["variants"] + 1) for hf, vf in flips]

    @property
    def nbytes(self) -> int:
        """Bytes of one stored embedding."""
        return int(np.prod(self.shape)) * STORAGE_DTYPES[self.dtype].itemsize


def weights_hash(module) -> str:
    """sha256 of a module's variables (names, shapes, dtypes and bytes)."""
    from flax import nnx

    digest = hashlib.sha256()
    for path, var in sorted(nnx.to_flat_state(nnx.state(module)), key=lambda pv: str(pv[0])):
        value = np.asarray(var.get_value())
        digest.update(f"{path}:{value.shape}:{value.dtype};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _shard_name(p: int, n: int) -> str:
    return f"shard-{p:05d}-of-{n:05d}"


class EmbeddingCache:
    """``lookup(batch)`` → ``(B, g, g, C)`` float32 embeddings of the batch's (case, slice,
    flips, variant), read from the cache's shards."""

    def __init__(self, directory: Path, spec: CacheSpec):
        self.directory, self.spec = Path(directory), spec
        meta = json.loads((self.directory / SPEC_FILE).read_text())
        names = meta["shards"]
        self.index: dict[tuple, int] = {}
        for name in names:
            for key in json.loads((self.directory / f"{name}.json").read_text()):
                self.index[(key[0], int(key[1]), bool(key[2]), bool(key[3]), int(key[4]))] = \
                    len(self.index)
        self.source = grain.sources.ArrayRecordDataSource(
            [str(self.directory / f"{name}.array_record") for name in names])
        self._dtype = STORAGE_DTYPES[spec.dtype]

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, batch: dict) -> np.ndarray:
        variants = batch.get("variant", np.zeros(len(batch["case_id"]), np.int32))
        rows = [self.index[(as_text(c), int(s), bool(f[0]), bool(f[1]), int(v))] for c, s, f, v in
                zip(batch["case_id"], batch["slice_index"], batch["flips"], variants)]
        return np.stack([np.frombuffer(self.source[r], self._dtype).reshape(self.spec.shape)
                         for r in rows]).astype(np.float32)

    @classmethod
    def open_or_build(cls, root: str | Path, spec: CacheSpec, source: Sequence[dict],
                      frame: FrameConfig, embed: Callable[[np.ndarray], jax.Array],
                      chunk: int = 8, log: Callable[[str], None] = print,
                      barrier: Callable[[str], None] = lambda name: None) -> "EmbeddingCache":
        """The cache of ``spec`` under ``root``, built first if it is not complete there.

        ``embed(images)`` takes this process's ``(chunk, S, S, 3)`` input-frame images and
        returns the embeddings of the global batch (every process calls it in lockstep,
        ``chunk`` images each; :func:`automedsam_jax.core.distributed.local_rows` takes this
        process's rows back). ``barrier(name)`` synchronises the processes."""
        directory = Path(root).expanduser().absolute() / spec.key()
        if (directory / SPEC_FILE).is_file():
            cache = cls(directory, spec)
            log(f"embedding cache: {len(cache)} embeddings reused from {directory}")
            return cache
        per_slice = len(spec.variants)
        total = len(source) * per_slice
        _check_room(directory, total * spec.nbytes, spec)
        directory.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        n, p = jax.process_count(), jax.process_index()
        counts = [len(range(q, len(source), n)) * per_slice for q in range(n)]
        name = _shard_name(p, n)
        _build_shard(directory / name, spec, source, range(p, len(source), n), frame, embed,
                     chunk, -(-max(counts) // chunk))
        barrier("automedsam_jax: embedding cache shards written")
        if p == 0:
            write_atomic(directory / SPEC_FILE, json.dumps({
                "spec": dataclasses.asdict(spec), "shards": [_shard_name(q, n) for q in range(n)],
                "counts": counts}, indent=2))
        barrier("automedsam_jax: embedding cache complete")
        cache = cls(directory, spec)
        seconds = time.perf_counter() - t0
        log(f"embedding cache: {total} embeddings ({len(source)} slices × {per_slice} variants, "
            f"{spec.dtype}), {total * spec.nbytes / 2**20:.0f} MiB in {directory}, "
            f"{seconds:.1f} s ({total / max(seconds, 1e-9):.2f} img/s)")
        return cache


def _check_room(directory: Path, needed: int, spec: CacheSpec) -> None:
    """Refuse up front, naming the sizes and the ways out, when the disk lacks ``needed`` bytes."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > 0.95 * free:
        other = ("" if spec.dtype == "bfloat16" else
                 ", --cache-dtype bfloat16 (half the size)")
        raise UsageError(
            f"the embedding cache needs {needed / 2**30:.2f} GiB in {directory} but the disk has "
            f"{free / 2**30:.2f} GiB free: pass --cache-dir on a larger disk{other}, or train "
            "with --no-cache-embeddings (the encoder runs in every step)")


def _build_shard(path: Path, spec: CacheSpec, source: Sequence[dict], slices: range,
                 frame: FrameConfig, embed, chunk: int, num_chunks: int) -> None:
    """Embed ``slices`` of ``source`` (every variant) into ``path``.array_record/.json,
    ``chunk`` images per call, ``num_chunks`` calls (the same on every process: a process with
    fewer images pads with zeros). Chunk k + 1 is prepared and dispatched before chunk k is
    fetched and written, so the host's image work overlaps the encoder."""
    dtype, keys = STORAGE_DTYPES[spec.dtype], []
    augment = AugmentConfig(**spec.augment)

    def images():
        for i in slices:
            r = source[i]
            case, z = as_text(r["case_id"]), int(r["slice_index"])
            for v, hf, vf in spec.variants:
                keys.append([case, z, hf, vf, v])
                yield training_view(r["image"], r["label"], frame, spacing=pixel_spacing(r),
                                    case_id=case, slice_index=z,
                                    variant=v, flips=(hf, vf), augment=augment,
                                    seed=spec.seed or 0)[0]

    it = images()

    def dispatch(_):
        part = [x for _, x in zip(range(chunk), it)]
        batch = np.zeros((chunk, frame.size, frame.size, 3), np.float32)
        if part:
            batch[:len(part)] = np.stack(part)
        return embed(batch), len(part)

    tmp = path.with_name(path.name + ".array_record.tmp")
    writer = ArrayRecordWriter(str(tmp), "group_size:1,uncompressed")  # random access, no codec
    for embeddings, n in dispatch_ahead(range(num_chunks), dispatch, size=1):
        _write(writer, embeddings, n, dtype)
    writer.close()
    os.replace(tmp, path.with_name(path.name + ".array_record"))
    write_atomic(path.with_name(path.name + ".json"), json.dumps(keys))


def _write(writer, embeddings: jax.Array, n: int, dtype: np.dtype) -> None:
    for row in local_rows(embeddings)[:n].astype(dtype):
        writer.write(row.tobytes())
