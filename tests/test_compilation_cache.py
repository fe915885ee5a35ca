"""The persistent compilation cache: a second process compiling the same program reads it back
from the directory the first one wrote (JAX's own cache-hit event counts it)."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # minutes: not in the fast tier


PROGRAM = textwrap.dedent("""
    import sys
    import jax
    from automedsam_jax.io.compilation_cache import use_compilation_cache
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
    print("dir", use_compilation_cache(sys.argv[1], min_compile_s=0.0))
    import jax.numpy as jnp
    jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
    print("hits", len(hits))
""")


def run(directory) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(directory)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def test_second_start_reads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "xla"
    first = run(cache)
    assert first[:2] == ["dir", str(cache)] and first[-2:] == ["hits", "0"]
    assert any(p.name.startswith("jit__lambda") for p in cache.iterdir())
    second = run(cache)
    assert int(second[-1]) >= 1


def test_none_turns_it_off(tmp_path):
    assert run("none") == ["dir", "None", "hits", "0"]
