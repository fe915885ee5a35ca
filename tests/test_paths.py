"""io/paths.py and io/staging.py on local disk (the gs:// side: tests/test_cloud_paths.py):
URLs are told from local paths, the embedding cache refuses a URL naming the flag, an exclusive
create refuses an existing file, an atomic write leaves no temporary file, a URL data directory
has its mirror under the download cache."""

from pathlib import Path

import pytest

from automedsam_jax.io.errors import UsageError
from automedsam_jax.io.paths import as_path, create_new, is_url, local_dir, write_atomic


def test_urls_and_local_paths():
    assert is_url("gs://bucket/run") and not is_url("runs/demo")
    assert as_path("~/x") == Path.home() / "x"
    assert as_path("runs/demo", absolute=True) == Path.cwd() / "runs" / "demo"


def test_local_dir_refuses_a_url_naming_the_flag():
    with pytest.raises(UsageError, match="--cache-dir gs://b/cache: .*array_record"):
        local_dir("gs://b/cache", "--cache-dir")
    assert local_dir("~/d", "--cache-dir") == Path.home() / "d"


def test_a_url_data_dir_is_mirrored_under_the_download_cache(tmp_path, monkeypatch):
    from automedsam_jax.io.staging import local_data_dir, stage_in
    monkeypatch.setenv("AUTOMEDSAM_CACHE", str(tmp_path))
    assert local_data_dir("gs://bkt/some/data/") == tmp_path / "staged/gs/bkt/some/data"
    assert local_data_dir("~/data") == stage_in("~/data") == Path.home() / "data"


def test_create_new_and_write_atomic(tmp_path):
    lock = tmp_path / ".lock"
    create_new(lock, "host 1\n")
    with pytest.raises(FileExistsError):
        create_new(lock, "host 2\n")
    assert lock.read_text() == "host 1\n"
    write_atomic(tmp_path / "a.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "a.json"]
