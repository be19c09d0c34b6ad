"""The machine probe recorded next to fixed-rate latencies, and the API report's line for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.bench.api_report import figures_table
from recsys.bench.common import idle_wake_cost

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_work_runs_back_to_back_then_each_time_after_a_pause() -> None:
    calls: list[str] = []
    figures = idle_wake_cost(
        repeats=5,
        idle_s=0.25,
        work=lambda: calls.append("work"),
        sleep=lambda seconds: calls.append(f"sleep {seconds}"),
    )
    assert calls == ["work"] * 5 + ["sleep 0.25", "work"] * 5
    assert figures["idle_s"] == 0.25
    assert figures["back_to_back_us"] > 0
    assert figures["factor"] == pytest.approx(figures["after_idle_us"] / figures["back_to_back_us"])


def test_the_api_report_shows_the_probe_before_and_after_the_runs() -> None:
    result = json.loads((REPO / "docs/benchmarks/bench-api.json").read_text())
    result.pop("idle_wake_cost", None)
    assert "5 ms idle" not in figures_table(result)
    result["idle_wake_cost"] = {
        "before": {"back_to_back_us": 50.0, "after_idle_us": 240.0},
        "after": {"back_to_back_us": 60.0, "after_idle_us": 300.0},
    }
    assert "| 50 / 240 µs and 60 / 300 µs |" in figures_table(result)
