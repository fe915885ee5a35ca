"""io/paths.py on local disk (the gs:// side runs against tests/gcs_emulator.py, see the issue
note): URLs are told from local paths, array_record folders refuse URLs naming the flag, an
exclusive create refuses an existing file, an atomic write leaves no temporary file."""

from pathlib import Path

import pytest

from automedsam_jax.io.errors import UsageError
from automedsam_jax.io.paths import as_path, create_new, is_url, local_dir, write_atomic


def test_urls_and_local_paths():
    assert is_url("gs://bucket/run") and not is_url("runs/demo")
    assert as_path("~/x") == Path.home() / "x"
    assert as_path("runs/demo", absolute=True) == Path.cwd() / "runs" / "demo"


def test_local_dir_refuses_a_url_naming_the_flag():
    with pytest.raises(UsageError, match="--data-dir gs://b/data: .*array_record"):
        local_dir("gs://b/data", "--data-dir")
    assert local_dir("~/d", "--data-dir") == Path.home() / "d"


def test_create_new_and_write_atomic(tmp_path):
    lock = tmp_path / ".lock"
    create_new(lock, "host 1\n")
    with pytest.raises(FileExistsError):
        create_new(lock, "host 2\n")
    assert lock.read_text() == "host 1\n"
    write_atomic(tmp_path / "a.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "a.json"]
