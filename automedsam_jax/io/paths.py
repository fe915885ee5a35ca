"""One path type for the files a run reads and writes: local paths and cloud URLs alike.

A local path (``runs/demo``, ``~/models/x``) becomes a :class:`pathlib.Path` (``~`` expanded);
a URL (``gs://bucket/run``, through ``etils.epath`` and fsspec's gcsfs) becomes an
:class:`etils.epath.Path`. Both have the same methods (``/``, ``exists``, ``mkdir``,
``open``, ``read_text``, ``write_text``, ``iterdir``, ``glob``, ``rmtree``), and Orbax,
tensorboardX and JAX's compilation cache take either. ``gs://`` needs ``gcsfs`` (the ``gcs``
extra: ``pip install "automedsam-jax[gcs]"``); a local GCS emulator is used where
``STORAGE_EMULATOR_HOST`` (and, for Orbax's tensorstore, ``TENSORSTORE_GCS_HTTP_URL``) is set.

What stays local: datasets and the embedding cache are ``array_record`` files, which their
reader and writer open as local files only. A URL ``--data-dir`` is therefore mirrored on each
host's disk (:mod:`automedsam_jax.io.staging`); ``--cache-dir`` (a per-run, per-host product)
is refused as a URL (:func:`local_dir`).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Union

from .errors import UsageError

AnyPath = Union[Path, "epath.Path"]  # noqa: F821 - etils.epath, imported with a URL
"""What :func:`as_path` returns."""

_FILESYSTEMS = {"gs": ("gcsfs", "gcs")}
"""URL scheme → (the fsspec package that serves it, the extra that installs it)."""


def is_url(path: str | os.PathLike) -> bool:
    """``path`` names a location on another file system (``scheme://...``)."""
    return "://" in str(path)


def as_path(path: str | os.PathLike, absolute: bool = False) -> AnyPath:
    """``path`` as the one path type (see the module docstring), a local one made absolute with
    ``absolute`` (Orbax wants absolute paths; a URL is absolute already); a URL whose file
    system is not installed raises :class:`UsageError` naming the package to install."""
    if not is_url(path):
        local = Path(path).expanduser()
        return local.absolute() if absolute else local
    text = str(path)
    scheme = text.split("://", 1)[0]
    if scheme in _FILESYSTEMS:
        package, extra = _FILESYSTEMS[scheme]
        try:  # imported here, not first inside an Orbax thread (a circular import there)
            importlib.import_module(package)
        except ImportError:
            raise UsageError(f"{text}: {scheme}:// paths need {package} (pip install "
                             f"\"automedsam-jax[{extra}]\")") from None
    from etils import epath
    return epath.Path(text)


ARRAY_RECORD = ("the embedding cache is array_record files, which are read and written on "
                "local disk only")
"""Why ``--cache-dir`` is local (:func:`local_dir`)."""


def local_dir(path: str | os.PathLike, flag: str, why: str = ARRAY_RECORD) -> Path:
    """``path`` as a local path (``~`` expanded); a URL raises :class:`UsageError` naming
    ``flag`` and ``why`` it must be local."""
    if is_url(path):
        raise UsageError(f"{flag} {path}: {why}; copy the folder to this host's disk (e.g. "
                         f"gcloud storage cp -r {path} DIR) and pass {flag} DIR")
    return Path(path).expanduser()


def write_atomic(path: AnyPath, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one, never
    a part: locally through a temporary file renamed into place; an object-store write is
    already all-or-nothing (the object appears when its upload completes)."""
    if not isinstance(path, Path):
        path.write_text(text)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def create_new(path: AnyPath, text: str) -> None:
    """Write ``text`` to a new file ``path``; ``FileExistsError`` if it exists. On object
    storage the check and the write are one request (GCS: the ``ifGenerationMatch=0``
    precondition of fsspec's exclusive mode), so of two writers one wins."""
    if isinstance(path, Path):
        with path.open("x") as f:
            f.write(text)
        return
    import fsspec
    fs, name = fsspec.core.url_to_fs(str(path))
    with fs.open(name, "xb") as f:
        f.write(text.encode())


__all__ = ["ARRAY_RECORD", "AnyPath", "as_path", "create_new", "is_url", "local_dir",
           "write_atomic"]
