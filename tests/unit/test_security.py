"""Security checks that need no service: bandit finds nothing of high severity in the
packages, and the API key is compared in constant time."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException
from pydantic import SecretStr

from api import deps

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["schemas", "core", "streams", "batch", "api", "infra", "recsys"]


def test_bandit_finds_no_high_severity_issue() -> None:
    """Medium and low findings are listed by `bandit -r <packages>`; each one silenced inline
    says why (`# nosec <id>: reason`). High severity fails the build."""
    run = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", *PACKAGES, "-f", "json", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, Any] = json.loads(run.stdout)
    assert not report["errors"], report["errors"]
    scanned = {Path(name).parts[0] for name in report["metrics"] if name != "_totals"}
    assert scanned == set(PACKAGES)
    high = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] == "HIGH"
    ]
    assert not high, "\n".join(high)


def _services(key: str) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(api_key=SecretStr(key)))


async def test_api_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 32
    compared: list[tuple[bytes, bytes]] = []
    real_compare = secrets.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(secrets, "compare_digest", compare_digest)  # as api.deps calls it
    await deps.require_api_key(_services(key), key)
    # Wrong keys of the same length, wrong in the first or the last character: refused, and
    # by compare_digest (whose time does not depend on where they differ), not by `==`.
    for wrong in ("x" + key[1:], key[:-1] + "x", None):
        with pytest.raises(HTTPException) as refused:
            await deps.require_api_key(_services(key), wrong)
        assert refused.value.status_code == 401
    assert compared == [
        (key.encode(), key.encode()),
        (("x" + key[1:]).encode(), key.encode()),
        ((key[:-1] + "x").encode(), key.encode()),
    ]


async def test_no_api_key_configured_means_open() -> None:
    services = SimpleNamespace(settings=SimpleNamespace(api_key=None))
    await deps.require_api_key(services, None)  # type: ignore[arg-type]
