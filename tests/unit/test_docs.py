"""The README stays true: every setting documented, the two set-up commands real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsys.cli import app
from recsys.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"RECSYS_{n.upper()}" for n in Settings.model_fields if f"RECSYS_{n.upper()}" not in README
    ]
    assert missing == []


def test_the_two_setup_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "make up " in README
    assert "make test " in README
    assert re.search(r"^up: ", makefile, re.M)
    assert re.search(r"^test: ", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_documented_command_exists() -> None:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    names |= {g.name or "" for g in app.registered_groups}
    documented = set(re.findall(r"^\| `recsys (\w+)", README, re.M))
    assert documented
    assert documented <= names
