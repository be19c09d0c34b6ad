"""The OpenAPI document is the truth: schemathesis, run as a user would run it (its CLI, every
check, every phase: examples, coverage, fuzzing and the stateful phase over the links it infers)
against the app served by uvicorn over the real Redis, Kafka and a published model, finds no
failure: no 5xx, every status code and body as documented (4xx included), every request the
schema allows accepted and every one it forbids rejected, the API key enforced.

Bounded: 20 examples per operation, so that the run stays well under a minute; `recsys bench
fuzz` runs the same command (`recsys.bench.fuzz.schemathesis_command`) with 200.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.main import create_app
from core.settings import Settings
from recsys.bench.fuzz import (
    HAR_REPORT,
    UNDECLARED,
    hooks_env,
    schemathesis_command,
    status_counts,
)
from tests.integration.conftest import served_over_http

pytestmark = pytest.mark.integration

API_KEY = "fuzz-key-0123456789"
EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def served_url(make_api_settings: Callable[..., Settings], model_version: str) -> Iterator[str]:
    """The app on a free port, in a thread with its own event loop (lifespan included)."""
    with served_over_http(create_app(make_api_settings(api_key=SecretStr(API_KEY)))) as url:
        yield url


def test_schemathesis_finds_nothing_with_every_check(served_url: str, tmp_path: Path) -> None:
    command = schemathesis_command(served_url, API_KEY, EXAMPLES_PER_OPERATION, tmp_path)
    # Run in tmp_path: schemathesis keeps a `.schemathesis/` cache in its working directory.
    run = subprocess.run(
        command, cwd=tmp_path, env=hooks_env(), capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    # Every operation tested, and the stateful phase had a link to follow.
    assert "Tested: 15" in output, output
    assert "Stateful" in output
    assert "API Links:" in output, output
    # What the benchmark reads back: every request sent, counted per operation, none unmatched.
    har = json.loads((tmp_path / HAR_REPORT).read_text())
    paths = httpx.get(f"{served_url}/openapi.json", timeout=10).json()["paths"]
    sent = status_counts(har, paths)
    declared = {op: by for op, by in sent.items() if op != UNDECLARED}
    assert len(declared) == 15, sorted(sent)
    assert not any(status >= 500 or status == 0 for by in sent.values() for status in by), sent
    # What the document leaves out is refused: an unknown method 405, an unknown path 404.
    assert set(sent[UNDECLARED]) <= {404, 405}, sent[UNDECLARED]
