"""The archiver's jemalloc setting takes effect only if it is in the environment before
deltalake loads: nothing on the `recsys archive` path may import deltalake earlier."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import os, sys
import recsys.cli, recsys.commands.archive, core.archive
assert "deltalake" not in sys.modules, "deltalake loaded before streams.archive set its allocator"
import streams.archive.archiver
assert "deltalake" in sys.modules
print(os.environ.get("_RJEM_MALLOC_CONF", ""))
"""


def probe(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_archiver_returns_freed_pages_before_deltalake_loads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    assert "dirty_decay_ms:1000" in probe(env)


def test_an_operators_own_allocator_setting_wins() -> None:
    assert probe({**os.environ, "_RJEM_MALLOC_CONF": "narenas:2"}) == "narenas:2"
