"""`recsys bench fuzz`'s reading of what schemathesis sent, its verdict and its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys.bench.fuzz import (
    HAR_REPORT,
    JSON_REPORT,
    UNDECLARED,
    path_matcher,
    schemathesis_command,
    status_classes,
    status_counts,
)
from recsys.bench.fuzz_report import markdown, plot, verdict

pytestmark = pytest.mark.unit

PATHS: dict[str, dict[str, Any]] = {
    "/recommend/{user_id}": {"get": {}},
    "/models/active": {"get": {}},
    "/models/{version}": {"get": {}},
    "/events": {"post": {}},
}
TEMPLATES = list(PATHS)


def entry(method: str, url: str, status: int | None) -> dict[str, Any]:
    response = {"status": status} if status is not None else {"status": 0}
    return {"request": {"method": method, "url": url}, "response": response}


def har(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"log": {"entries": list(entries)}}


def test_a_request_path_finds_its_template_and_a_literal_path_wins() -> None:
    match = path_matcher(TEMPLATES)
    assert match("/recommend/u1") == "/recommend/{user_id}"
    assert match("/recommend/a%2Fb") == "/recommend/{user_id}"  # an encoded '/' is one segment
    assert match("/models/active") == "/models/active"
    assert match("/models/v-3") == "/models/{version}"
    assert match("/recommend/a/b") is None
    assert match("/recommend/") is None


def test_requests_are_counted_per_operation_and_status_with_no_answer_as_0() -> None:
    sent = status_counts(
        har(
            entry("get", "http://127.0.0.1:1/recommend/u1?k=5", 200),
            entry("GET", "http://127.0.0.1:1/recommend/u2", 422),
            entry("GET", "http://127.0.0.1:1/recommend/u3", 200),
            entry("POST", "http://127.0.0.1:1/events", None),
            entry("GET", "http://127.0.0.1:1/nowhere", 404),
            entry("DELETE", "http://127.0.0.1:1/events", 405),
        ),
        PATHS,
    )
    assert sent == {
        UNDECLARED: {404: 1, 405: 1},
        "GET /recommend/{user_id}": {200: 2, 422: 1},
        "POST /events": {0: 1},
    }
    assert status_classes(sent["GET /recommend/{user_id}"]) == {
        "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0, "none": 0
    }  # fmt: skip
    assert status_classes(sent["POST /events"])["none"] == 1


def result(**overrides: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "exit_code": 0,
        "seconds": 300.0,
        "dataset": "synthetic:users=5",
        "schemathesis_version": "4.0",
        "config": {"max_examples": 200, "workers": 2, "phases": "examples,stateful"},
        "summary": {
            "operations": {"selected": 2, "tested": 2},
            "phases": {"examples": {"status": "success"}},
            "test_cases": {"generated": 400},
            "failures": [],
            "errors": [],
            "warnings": {"missing_test_data": [], "low_valid_rate": ["POST /events"]},
        },
        "requests": {"GET /recommend/{user_id}": {200: 300, 422: 90}, "POST /events": {202: 40}},
        "output_tail": ["the last line schemathesis printed"],
    }
    found.update(overrides)
    return found


def test_a_clean_run_passes_and_survives_a_json_round_trip() -> None:
    clean = result()
    assert verdict(clean) == {
        "passed": True,
        "failures": 0,
        "errors": 0,
        "untested_operations": 0,
        "requests": 430,
        "by_class": {"2xx": 340, "3xx": 0, "4xx": 90, "5xx": 0, "none": 0},
    }
    saved = json.loads(json.dumps(clean))  # status codes become strings
    assert verdict(saved) == verdict(clean)


@pytest.mark.parametrize(
    "change",
    [
        {"exit_code": 1},
        {"requests": {"GET /recommend/{user_id}": {200: 3, 500: 1}}},
        {"requests": {"POST /events": {202: 3, 0: 1}}},
    ],
)
def test_an_exit_code_a_5xx_or_a_request_without_answer_fails(change: dict[str, Any]) -> None:
    assert verdict(result(**change))["passed"] is False


def test_a_failure_an_error_or_an_untested_operation_fails() -> None:
    base = result()
    failing = {"title": "Response violates schema", "count": 2, "operations": ["POST /events"]}
    for summary in (
        base["summary"] | {"failures": [failing]},
        base["summary"] | {"errors": [{"title": "Network error", "count": 1}]},
        base["summary"] | {"operations": {"selected": 3, "tested": 2}},
    ):
        assert verdict(result(summary=summary))["passed"] is False


def test_the_report_lists_every_operation_and_on_failure_says_why(tmp_path: Path) -> None:
    failing = {"title": "Undocumented status code", "count": 3, "operations": ["POST /events"]}
    failed = result(exit_code=1, summary=result()["summary"] | {"failures": [failing]})
    text = markdown(failed, "bench-fuzz.png")
    assert "**FAIL**" in text
    assert "| `GET /recommend/{user_id}` | 390 | 200 (300), 422 (90) |" in text
    assert "| Undocumented status code | 3 | POST /events |" in text
    assert "the last line schemathesis printed" in text
    clean = markdown(result(), "bench-fuzz.png")
    assert "**pass**" in clean
    assert "the last line schemathesis printed" not in clean
    assert "- low_valid_rate: POST /events" in clean
    assert "missing_test_data" not in clean
    plot(result(), tmp_path / "bench-fuzz.png")
    assert (tmp_path / "bench-fuzz.png").stat().st_size > 0


def test_the_command_runs_every_check_and_phase_and_writes_both_reports(tmp_path: Path) -> None:
    command = schemathesis_command("http://127.0.0.1:9", "key", 50, tmp_path, seed=7)
    text = " ".join(command)
    assert "--checks all" in text
    assert "--phases examples,coverage,fuzzing,stateful" in text
    assert "--max-examples 50" in text
    assert "X-API-Key: key" in text
    assert f"--report-json-path {tmp_path / JSON_REPORT}" in text
    assert f"--report-har-path {tmp_path / HAR_REPORT}" in text
    assert command[-2:] == ["--seed", "7"]
    assert "--seed" not in schemathesis_command("http://127.0.0.1:9", "key", 50, tmp_path)
