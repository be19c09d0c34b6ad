"""The Prometheus alert rules (infra/prometheus/alerts.yml): valid for promtool, firing as the
cases of alerts.test.yml say, and loaded where they are deployed (that they name only exported
metrics: tests/unit/test_grafana_dashboard.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: `apt-get install prometheus` (Debian/Ubuntu; .ci/run "
            "installs it) or put Prometheus's promtool on PATH"
        )
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_are_valid() -> None:
    checked = run("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_fire_as_their_cases_say() -> None:
    tested = run("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_wrong_expectation_fails_the_rule_tests(tmp_path: Path) -> None:
    """The rule tests can fail: the same cases against a rule file whose 5xx threshold is
    raised out of reach."""
    (tmp_path / "alerts.yml").write_text(
        (RULES / "alerts.yml")
        .read_text()
        .replace("> 0.01\n        for: 5m", "> 0.5\n        for: 5m", 1)
    )
    (tmp_path / "alerts.test.yml").write_text((RULES / "alerts.test.yml").read_text())
    tested = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert tested.returncode != 0
    assert "RecsysApiErrors" in tested.stdout + tested.stderr


def test_prometheus_loads_the_rules_and_compose_mounts_them() -> None:
    config = yaml.safe_load((RULES / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    compose = yaml.safe_load((RULES.parents[1] / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./infra/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
