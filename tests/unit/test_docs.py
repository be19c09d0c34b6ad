"""The README and the runbook stay true: every setting and every other variable the app reads
documented, the two set-up commands real, and the metrics they name exported under Prometheus's
naming conventions."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# Imported for the metrics they register: the default registry is what their /metrics serve.
import api.main  # noqa: F401
import batch.retrain.metrics  # noqa: F401
import streams.app
import streams.archive.metrics  # noqa: F401
from core.settings import Settings
from recsys.cli import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
RUNBOOK = (ROOT / "docs" / "operations.md").read_text()
# The code the services run (tests excluded): where a variable read outside Settings would hide.
APP_PACKAGES = ("api", "streams", "recsys", "batch", "schemas", "infra")
# Histograms that measure something other than time, with its unit; every other histogram is a
# duration and ends in _seconds. A new entry is a decision: say what the unit is.
NOT_DURATIONS = {"recsys_stream_batch_size": "messages per batch"}
NON_BASE_UNITS = re.compile(r"_(milliseconds|ms|microseconds|us|minutes|hours|days|kilobytes|"
                            r"megabytes|gigabytes|percent)(_total)?$")  # fmt: skip
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
SERIES_SUFFIXES = {"counter": ("",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def settings_variables() -> set[str]:
    return {f"RECSYS_{name.upper()}" for name in Settings.model_fields}


def deployment_variables() -> set[str]:
    """The variables in the README's "Deployment variables" table (first column)."""
    _, found, section = README.partition("\n### Deployment variables\n")
    assert found, "the README has no Deployment variables section"
    section = re.split(r"^#{1,6} ", section, maxsplit=1, flags=re.M)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.M))


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
    documented = set(re.findall(r"^\| `recsys ([\w-]+)", README, re.M))
    assert documented
    assert documented <= names


def environment_reads() -> dict[str, str]:
    """Variable name -> where the app's code reads it from the environment directly
    (`os.environ[...]`, `os.environ.get(...)`, `os.getenv(...)`); a name given by a constant
    is resolved by importing the module that reads it."""
    reads: dict[str, str] = {}
    for package in APP_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                key = environment_key(node)
                if key is None or not isinstance(node, ast.expr):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                reads[resolve(key, path)] = where
    return reads


def environment_key(node: ast.AST) -> ast.expr | None:
    def is_environ(value: ast.expr) -> bool:
        return ast.unparse(value) == "os.environ"

    if isinstance(node, ast.Subscript) and is_environ(node.value):
        return node.slice
    if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
        target = ast.unparse(node.func)
        if target in ("os.environ.get", "os.environ.pop", "os.getenv"):
            return node.args[0]
    return None


def resolve(key: ast.expr, path: Path) -> str:
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value
    if isinstance(key, ast.Name):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        value = getattr(module, key.id, None)
        if isinstance(value, str):
            return value
    return f"<unresolved {ast.unparse(key)} in {path.relative_to(ROOT)}>"


def test_environment_reads_are_found() -> None:
    """The scan really finds reads: recsys/commands/serve.py reads the multiprocess directory
    by constant."""
    assert "PROMETHEUS_MULTIPROC_DIR" in environment_reads()


def test_every_variable_read_outside_settings_is_documented() -> None:
    documented = settings_variables() | deployment_variables()
    missing = {name: where for name, where in environment_reads().items() if name not in documented}
    assert missing == {}


def type_lines(exposition: str) -> dict[str, str]:
    """Family name -> type, as the Prometheus text format exposes them (counters with _total)."""
    return dict(TYPE_LINE.findall(exposition))


def client_library_families() -> set[str]:
    """What prometheus_client's default collectors (process_*, python_*) expose."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return set(type_lines(generate_latest(registry).decode()))


def naming_violations(exposition: str) -> list[str]:
    families = type_lines(exposition)
    # The client library's own metrics, and the `_created` timestamp gauges it adds beside a
    # counter or histogram, are not the app's to name.
    skip = client_library_families() | {
        f"{name.removesuffix('_total')}_created"
        for name, kind in families.items()
        if kind in ("counter", "histogram")
    }
    problems = []
    for name, kind in families.items():
        if name in skip:
            continue
        if not name.startswith("recsys_"):
            problems.append(f"{name}: not in the recsys_ namespace")
        if kind == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter must end in _total")
        if kind != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total")
        if kind == "histogram" and not name.endswith("_seconds") and name not in NOT_DURATIONS:
            problems.append(f"{name}: a histogram of durations must end in _seconds")
        if NON_BASE_UNITS.search(name):
            problems.append(f"{name}: not in a base unit (seconds, bytes, ratio)")
    return problems


def app_exposition() -> str:
    """What the API's and the worker's /metrics serve: the default registry, with everything
    their modules (api.main, streams.app, imported above) register."""
    return generate_latest(REGISTRY).decode()


def test_exported_metrics_follow_the_naming_conventions() -> None:
    families = type_lines(app_exposition())
    assert {"recsys_api_requests_total", "recsys_stream_events_total"} <= families.keys()
    assert naming_violations(app_exposition()) == []
    assert NOT_DURATIONS.keys() <= families.keys()  # no stale exemption


def test_the_naming_check_catches_violations() -> None:
    registry = CollectorRegistry()
    Counter("api_hits", "Out of the namespace.", registry=registry)
    Gauge("recsys_queue_total", "A gauge named like a counter.", registry=registry)
    Histogram("recsys_api_latency_ms", "Milliseconds, not seconds.", registry=registry)
    exposition = generate_latest(registry).decode() + "# TYPE recsys_hits counter\n"
    assert sorted(naming_violations(exposition)) == [
        "api_hits_total: not in the recsys_ namespace",
        "recsys_api_latency_ms: a histogram of durations must end in _seconds",
        "recsys_api_latency_ms: not in a base unit (seconds, bytes, ratio)",
        "recsys_hits: a counter must end in _total",
        "recsys_queue_total: only counters end in _total",
    ]


def test_metrics_the_docs_name_are_exported() -> None:
    """The runbook's alert rules and prose, and the README, name only metrics the app exports:
    a series, or a family by its exposed name."""
    series = set(type_lines(app_exposition())) | {
        family + suffix
        for family, kind in type_lines(app_exposition()).items()
        if family.startswith("recsys_")
        for suffix in SERIES_SUFFIXES.get(kind, ("",))
    }
    named = set(re.findall(r"\brecsys_[a-z_]+[a-z]", RUNBOOK + README))
    assert named
    assert named - series == set()
