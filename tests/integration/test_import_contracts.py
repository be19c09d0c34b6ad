"""The layering is enforced by import-linter: the contracts in pyproject.toml hold for the code,
and an import that breaks them fails `lint-imports` (so `make lint`, `make test` and CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "core", "streams", "batch", "api", "infra", "recsys")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_project(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(tree: Path, module: str, statement: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}  # deliberate violation\n")


def test_the_code_keeps_every_contract(tmp_path: Path) -> None:
    outcome = lint_imports(copy_of_the_project(tmp_path))
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "2 kept, 0 broken" in outcome.stdout


@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        # The shared layer reaching up into a deployable.
        ("core.settings", "from api import main as _main", "Layers"),
        # A deployable reaching up into the command and harness.
        ("api.main", "from recsys.bench import common as _common", "Layers"),
        # One deployable importing another.
        ("streams.applier", "from batch import publish as _publish", "independent"),
        # The contracts importing the shared layer.
        ("schemas.events", "from core import keys as _keys", "Layers"),
    ],
)
def test_a_deliberate_violation_fails(
    tmp_path: Path, module: str, statement: str, broken: str
) -> None:
    tree = copy_of_the_project(tmp_path)
    add_import(tree, module, statement)
    outcome = lint_imports(tree)
    assert outcome.returncode != 0
    assert "BROKEN" in outcome.stdout
    broken_lines = [line for line in outcome.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(broken in line for line in broken_lines), outcome.stdout
    assert module in outcome.stdout
