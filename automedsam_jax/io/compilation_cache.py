"""XLA's persistent compilation cache: compiled programs kept on disk, so a second start of the
same command (a restart, another host of a pod, ``evaluate.py`` after ``train.py``) loads its
executables instead of compiling them again.

On by default in ``<download cache>/xla`` (:func:`automedsam_jax.io.fetch.cache_dir`:
``$AUTOMEDSAM_CACHE/xla`` or ``~/.cache/automedsam_jax/xla``); every app takes
``--compilation-cache DIR`` (any path JAX's cache accepts, ``gs://`` included, which is how a
pod's hosts share one) or ``none``. Entries are keyed by the program, the compile options, the
JAX/jaxlib version and the device kind, so a cache shared by different machines or versions
holds one entry per combination and never serves a wrong one. Only programs that took at least
``min_compile_s`` to compile are written (JAX's own threshold, 1 s): small ones cost more to
read back than to compile.
"""

from __future__ import annotations

import dataclasses

import jax

from .fetch import cache_dir
from .paths import as_path

OFF = "none"
DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class CompilationCacheConfig:
    """The ``--compilation-cache`` option of every app (train, evaluate, predict)."""

    compilation_cache: str = DEFAULT
    """XLA's persistent compilation cache: a directory or URL (gs://bucket/xla shares one over a
    pod's hosts), default (<download cache>/xla: $AUTOMEDSAM_CACHE/xla or
    ~/.cache/automedsam_jax/xla) or none (off)"""

    def apply(self) -> str | None:
        """Turn it on (or off) before anything compiles; → the directory, or None."""
        return use_compilation_cache(None if self.compilation_cache == DEFAULT
                                     else self.compilation_cache)


def default_directory() -> str:
    return str(cache_dir() / "xla")


def use_compilation_cache(directory: str | None = None, min_compile_s: float = 1.0) -> str | None:
    """Point JAX's persistent compilation cache at ``directory`` (None: the default, ``"none"``:
    off) before anything compiles; → the directory in use, or None when off."""
    if directory == OFF:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    directory = directory or default_directory()
    as_path(directory)  # a URL's file system is installed (and imported before JAX's threads)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
    return directory


__all__ = ["OFF", "DEFAULT", "CompilationCacheConfig", "default_directory",
           "use_compilation_cache"]
