"""A ``--data-dir`` on object storage (``gs://bucket/data``), read from this host's disk.

Datasets are ``array_record`` files, which their reader opens on local disk only; so a URL data
directory has a *mirror* on each host, ``<download cache>/staged/<scheme>/<bucket>/<path>``
(:func:`automedsam_jax.io.fetch.cache_dir`: ``$AUTOMEDSAM_CACHE`` or ``~/.cache/automedsam_jax``).
:func:`stage_in` downloads the URL's files the mirror lacks before the dataset is opened (or
built there); :func:`stage_out` uploads a dataset built in the mirror, so the next host or run
downloads it instead of building it. A file is compared by name and size; each download lands
under a temporary name and is renamed into place, and JSON files (tfds's ``dataset_info.json``,
which marks a dataset as built) move last, so a reader never takes a half-copied dataset for a
built one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import BadInputError
from .fetch import cache_dir
from .paths import AnyPath, as_path, is_url


def local_data_dir(path: str | os.PathLike) -> Path:
    """``path`` itself if it is local (``~`` expanded), else its mirror on this host."""
    if not is_url(path):
        return Path(path).expanduser()
    scheme, rest = str(path).split("://", 1)
    return cache_dir() / "staged" / scheme / rest.strip("/")


def _filesystem(url: str):
    import fsspec
    as_path(url)  # a missing file system package named, as for every URL
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()  # another host may have written since this process last listed it
    return fs, root.rstrip("/")


def _remote_sizes(fs, root: str) -> dict[str, int]:
    """Every file under ``root``: its path relative to ``root`` → its size in bytes."""
    found = fs.find(root, detail=True) if fs.exists(root) else {}
    return {name[len(root):].lstrip("/"): info["size"] for name, info in found.items()}


def _json_last(paths):
    return sorted(paths, key=lambda p: (str(p).endswith(".json"), str(p)))


def stage_in(path: str | os.PathLike) -> Path:
    """:func:`local_data_dir` of ``path``, holding every file of the URL ``path`` (downloaded
    where missing or of another size); a local ``path`` is returned as it is. Raises
    :class:`BadInputError` before downloading if the mirror's disk has too little space."""
    local = local_data_dir(path)
    if not is_url(path):
        return local
    fs, root = _filesystem(str(path))
    local.mkdir(parents=True, exist_ok=True)
    sizes = _remote_sizes(fs, root)
    todo = [rel for rel, size in sizes.items()
            if not ((local / rel).is_file() and (local / rel).stat().st_size == size)]
    need, free = sum(sizes[rel] for rel in todo), shutil.disk_usage(local).free
    if need > free:
        raise BadInputError(path, f"needs {need / 2**30:.1f} GiB on this host's disk for its "
                            f"mirror {local} but {free / 2**30:.1f} GiB are free: set "
                            "AUTOMEDSAM_CACHE to a larger disk, or pass a local --data-dir")
    for rel in _json_last(todo):
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        fs.get_file(f"{root}/{rel}", str(part))
        os.replace(part, target)
    return local


def stage_out(local: Path, path: str | os.PathLike, folder: AnyPath) -> int:
    """Upload the files under ``folder`` (inside the mirror ``local`` of the URL ``path``) that
    the URL lacks or holds at another size, JSON files last; returns how many were uploaded."""
    fs, root = _filesystem(str(path))
    folder = Path(folder)
    sizes = _remote_sizes(fs, root)
    todo = [p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".part")
            and sizes.get(p.relative_to(local).as_posix()) != p.stat().st_size]
    for p in _json_last(todo):
        fs.put_file(str(p), f"{root}/{p.relative_to(local).as_posix()}")
    return len(todo)


__all__ = ["local_data_dir", "stage_in", "stage_out"]
