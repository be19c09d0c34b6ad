"""`recsys bench fuzz`: the OpenAPI contract checked with a larger budget than CI's.

schemathesis (its CLI, as a user runs it) with every check and every phase (examples, coverage,
fuzzing, and the stateful phase over the links it infers) against `recsys serve` (2 workers,
the API key set) over throwaway Kafka and Redis, with a model published with its ranker, so
that the two-stage path answers too. Before the run an experiment is registered under the id
the OpenAPI document gives as its example (`homepage`), so that GET /experiments/{id} answers
200 as well as 404.

The CI test (`tests/integration/test_api_fuzz.py`) runs the same command with 20 examples an
operation; this one defaults to 200. Every request schemathesis sent is read back from its HAR
record and counted per operation and status code, so the report shows what the run exercised,
not only that it passed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.settings import Settings
from recsys.bench.api import BenchError

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
DATASET = "synthetic:users=500,items=300,events=20000,seed=0"
API_KEY = "bench-fuzz-key-0123456789"
EXAMPLE_EXPERIMENT = "homepage"  # the experiment id the OpenAPI document gives as its example
PHASES = "examples,coverage,fuzzing,stateful"
NO_RESPONSE = 0  # a HAR entry without a response: the connection failed
JSON_REPORT = "run.json"  # schemathesis's verdict, in `report_dir`
HAR_REPORT = "requests.har"  # every request it sent and the answer
UNDECLARED = "(a method or path not in the document)"


@dataclass(frozen=True)
class FuzzConfig:
    max_examples: int = 200
    seed: int = 0
    workers: int = 2  # `recsys serve` workers
    timeout_s: float = 3600.0


def schemathesis_command(
    url: str, api_key: str, max_examples: int, report_dir: Path, seed: int | None = None
) -> list[str]:
    """The schemathesis CLI run shared by the CI test and this benchmark: every check, every
    phase, the API key; its verdict and every request it sent (HAR) go to `report_dir`. Run it
    with `hooks_env()`."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", "all",
        "--phases", PHASES,
        "--max-examples", str(max_examples),
        "--header", f"X-API-Key: {api_key}",
        # One worker: with two, its threads parse source concurrently (hypothesis describes
        # strategies from their source), and CPython 3.11 keeps the AST constructor's depth in
        # state the threads share, so a CI run failed with "SystemError: AST constructor
        # recursion depth mismatch" (cpython gh-106905 is the same symptom).
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--report", "json,har",
        "--report-json-path", str(report_dir / JSON_REPORT),
        "--report-har-path", str(report_dir / HAR_REPORT),
        "--no-color",
    ]  # fmt: skip
    if seed is not None:
        command += ["--seed", str(seed)]
    return command


def hooks_env() -> dict[str, str]:
    """The environment schemathesis runs in: ours, with the hooks that keep a valid event's
    timestamp inside the API's window (`recsys.bench.schemathesis_hooks`)."""
    return {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}


def require_schemathesis() -> None:
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        raise BenchError(
            "schemathesis is not installed: it comes with the development extras, "
            "`pip install -e '.[dev]'` (`make test` installs them)"
        ) from None


# --- What the run sent -------------------------------------------------------------------------


def _template_pattern(template: str) -> re.Pattern[str]:
    """/recommend/{user_id} -> ^/recommend/[^/]+$ (a parameter is one path segment)."""
    return re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")


def path_matcher(templates: Iterable[str]) -> Callable[[str], str | None]:
    """A function from a request's path to the OpenAPI path template it belongs to
    (schemathesis percent-encodes a '/' inside a parameter, so a parameter is one segment)."""
    # A literal path wins over a template that also matches it (/models/active, /models/{v}).
    compiled = sorted(
        ((template, _template_pattern(template)) for template in templates),
        key=lambda pair: pair[0].count("{"),
    )

    def match(path: str) -> str | None:
        return next((template for template, pattern in compiled if pattern.match(path)), None)

    return match


def status_counts(
    har: Mapping[str, Any], paths: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[int, int]]:
    """Requests per operation ("GET /recommend/{user_id}") and status code (0: no response),
    from the HAR record and the OpenAPI document's `paths`. Requests to a method or path the
    document does not declare (the coverage phase checks that they are refused) are counted
    together under UNDECLARED."""
    match = path_matcher(paths)
    declared = {(method.upper(), template) for template, ops in paths.items() for method in ops}
    counts: dict[str, Counter[int]] = {}
    for entry in har.get("log", {}).get("entries", []):
        request = entry["request"]
        method, template = request["method"].upper(), match(urlparse(request["url"]).path)
        operation = f"{method} {template}" if (method, template) in declared else UNDECLARED
        status = int((entry.get("response") or {}).get("status") or NO_RESPONSE)
        counts.setdefault(operation, Counter())[status] += 1
    return {op: dict(sorted(c.items())) for op, c in sorted(counts.items())}


def status_classes(by_status: Mapping[int, int]) -> dict[str, int]:
    """{"2xx": n, "3xx": n, "4xx": n, "5xx": n, "none": n} of one operation's statuses."""
    classes = dict.fromkeys(("2xx", "3xx", "4xx", "5xx", "none"), 0)
    for status, n in by_status.items():
        key = "none" if status == NO_RESPONSE else f"{status // 100}xx"
        classes[key if key in classes else "none"] += n
    return classes


# --- The run -----------------------------------------------------------------------------------


def _register_example_experiment(settings: Settings) -> None:
    from core import experiment_store
    from core.clients import redis_client_for
    from core.experiments import Arm, Experiment

    async def register() -> None:
        redis = redis_client_for(settings)
        try:
            experiment = Experiment(
                EXAMPLE_EXPERIMENT, (Arm("control", 0.5), Arm("diverse", 0.5, {"diversity": 0.5}))
            )
            await experiment_store.create(redis, experiment, time.time())
        finally:
            await redis.aclose()

    asyncio.run(register())


def run(
    settings: Settings,
    config: FuzzConfig,
    work_dir: Path,
    on_line: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Publish a model, serve it, register the example experiment, run schemathesis; its
    verdict, what it sent per operation and status, and the tail of its output."""
    import httpx

    from batch.train import train_and_publish
    from recsys.bench.api import serving
    from recsys.bench.common import service_env

    require_schemathesis()
    model = train_and_publish(settings, DATASET, data_dir=work_dir / "data", ranker=True)
    _register_example_experiment(settings)
    env = service_env(settings, RECSYS_API_KEY=API_KEY)
    report_dir = work_dir / "schemathesis"
    with serving(env, config.workers, work_dir) as server:
        paths = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()["paths"]
        command = schemathesis_command(
            server.base_url, API_KEY, config.max_examples, report_dir, config.seed
        )
        started = time.monotonic()
        tail: list[str] = []
        with subprocess.Popen(
            command, cwd=work_dir, env=hooks_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    tail = [*tail[-199:], line.rstrip("\n")]
                    on_line(line.rstrip("\n"))
                    if time.monotonic() - started > config.timeout_s:
                        proc.kill()
                        raise BenchError(f"schemathesis ran past {config.timeout_s:.0f} s")
            finally:
                exit_code = proc.wait()
        seconds = time.monotonic() - started
    if not (report_dir / JSON_REPORT).exists():
        output = "\n".join(tail[-60:])
        raise BenchError(f"schemathesis wrote no report (exit code {exit_code}):\n{output}")
    summary = json.loads((report_dir / JSON_REPORT).read_text())
    har = json.loads((report_dir / HAR_REPORT).read_text())
    return {
        "benchmark": "fuzz",
        "config": asdict(config) | {"phases": PHASES, "checks": "all"},
        "dataset": DATASET,
        "model_version": model["version"],
        "schemathesis_version": summary.get("schemathesis_version"),
        "exit_code": exit_code,
        "seconds": seconds,
        "summary": {
            k: summary.get(k)
            for k in ("operations", "phases", "test_cases", "failures", "errors", "warnings")
        },
        "requests": status_counts(har, paths),
        "output_tail": tail[-60:],
    }


def run_with_local_services(
    config: FuzzConfig, on_line: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    with bench_services(False, "recsys-bench-fuzz-") as (settings, work_dir):
        return run(settings, config, work_dir, on_line)
