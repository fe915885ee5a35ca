"""The package's layers import one way (apps → evaluation → inference → data → io → core;
pyproject.toml's import-linter contracts), the package never imports the references it is
checked against, and the commands that need no dataset machinery do not load it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``lint-imports ARGS`` with this interpreter, on the ``automedsam_jax`` found in ``cwd``."""
    code = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_are_kept():
    run = _lint("--no-cache")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 kept, 0 broken" in run.stdout


def test_the_layer_contract_sees_real_imports(tmp_path):
    """The same layers upside down must break, on the imports the package really has (so the
    contract above is not kept because the tool sees nothing)."""
    config = tmp_path / "reversed.toml"
    config.write_text('''[tool.importlinter]
root_package = "automedsam_jax"

[[tool.importlinter.contracts]]
name = "reversed"
type = "layers"
containers = ["automedsam_jax"]
layers = ["core", "io", "data", "inference", "evaluation", "train"]
''')
    run = _lint("--no-cache", str(config))
    assert run.returncode == 1, run.stdout + run.stderr
    out = run.stdout
    assert "BROKEN" in out
    assert "automedsam_jax.train.loop -> automedsam_jax.data" in out  # a real upward import


def test_the_references_contract_sees_an_import(tmp_path):
    """A copy of the package that imports ``automedsam_references`` breaks the contract (so it is
    not kept because the tool ignores a package outside its root)."""
    shutil.copytree(ROOT / "automedsam_jax", tmp_path / "automedsam_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / "automedsam_jax" / "core" / "config.py"
    module.write_text(module.read_text() + "\nimport automedsam_references  # noqa: E402\n")
    run = _lint("--no-cache", "--contract", "no-references", str(ROOT / "pyproject.toml"),
                cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "automedsam_jax.core.config -> automedsam_references" in run.stdout


def test_predict_loads_no_dataset_machinery_nor_torch():
    code = ("import sys, automedsam_jax.predict\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'tensorflow_datasets', 'grain', 'torch', 'tensorflow'}))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
