"""`recsys bench api --ranker`: the two-stage path's verdicts, the ranked share of the answers and
the report's ranker on / off table, from hand-built results."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from recsys.bench.api import ApiBenchConfig
from recsys.bench.api_report import (
    figures_table,
    markdown,
    plot,
    ranked_share,
    ranker_table,
    ranker_verdicts,
    verdicts,
)

pytestmark = pytest.mark.unit


def _latency(p50: float, p99: float) -> dict[str, float]:
    return {
        "p50": p50,
        "p75": p50 * 1.2,
        "p90": p50 * 1.5,
        "p95": p50 * 2,
        "p99": p99,
        "p99.9": p99 * 1.5,
        "max": p99 * 2,
        "mean": p50 * 1.1,
    }


def _fixed(p50: float, p99: float, sources: dict[str, int]) -> dict[str, Any]:
    requests = 600
    return {
        "offered_rate": 200,
        "achieved_rate": 199.8,
        "requests": requests,
        "answered": requests,
        "statuses": {"200": requests},
        "errors": {},
        "sources": sources,
        "latency_ms": _latency(p50, p99),
        "service_time_ms": _latency(p50 * 0.9, p99 * 0.9),
        "client_lag_ms": _latency(0.05, 0.2),
        "client_cpu_s": 0.3,
        "client_cpu_us_per_request": 500.0,
        "resources": {"wall_s": 3.0, "server_cpu_s": 1.2, "redis_cpu_s": 0.1},
    }


def _saturation(
    rps: float, sources: dict[str, int], reasons: dict[str, int], requests: int = 0
) -> dict[str, Any]:
    requests = requests or sum(sources.values())
    return {
        "requests": requests,
        "seconds": 3.0,
        "requests_per_s": rps,
        "wrk_printed_requests_per_s": rps,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "ok_requests": requests,
        "sources": sources,
        "reasons": reasons,
        "latency_ms": _latency(6.0, 14.0),
        "connections": 8,
        "threads": 1,
        "wrk_cpu_s": 0.2,
        "wrk_cpu_us_per_request": 50.0,
        "resources": {"wall_s": 3.0, "server_cpu_s": 5.5, "redis_cpu_s": 0.4},
        "connections_per_worker": [4, 4],
    }


def ranker_result() -> dict[str, Any]:
    """A `--ranker` run that meets every target with the ranker on."""
    config = ApiBenchConfig(seconds=3, saturation_seconds=3, ranker=True)
    return {
        "benchmark": "api",
        "config": {**config.__dict__},
        "model": {"version": "v-test", "fit_seconds": 1.0, "publish_seconds": 0.5, "ranker": {}},
        "users": 943,
        "mmr_candidates": 100,
        "recommend": {
            "fixed_rate": _fixed(2.1, 8.5, {"ranked": 600}),
            "saturation": _saturation(1250.0, {"ranked": 3750}, {}),
        },
        "live": {
            "fixed_rate": _fixed(0.4, 1.0, {}),
            "saturation": _saturation(9000.0, {}, {}, requests=27000),
        },
        "ranker_off": {
            "fixed_rate": _fixed(1.6, 6.0, {"personalized": 600}),
            "saturation": _saturation(1800.0, {"personalized": 5400}, {"ranker_off": 5400}),
        },
        "impressions": None,
    }


def test_the_config_runs_without_the_ranker_by_default() -> None:
    assert ApiBenchConfig().ranker is False


def test_ranked_share_counts_every_request_and_fallbacks_as_not_ranked() -> None:
    run = {"requests": 600, "sources": {"ranked": 594, "personalized": 6}}
    assert ranked_share(run) == pytest.approx(0.99)
    # An unanswered request is no ranked answer either.
    assert ranked_share({"requests": 600, "sources": {"ranked": 599}}) < 1.0
    assert ranked_share({"requests": 10, "sources": {}}) == 0.0
    assert math.isnan(ranked_share({"requests": 0, "sources": {}}))


def test_ranker_verdicts_are_met_when_fast_and_every_answer_is_ranked() -> None:
    assert ranker_verdicts(ranker_result()) == {
        "p50": True,
        "p99": True,
        "fixed_rate_all_ranked": True,
        "saturation_rps": True,
    }


def test_ranker_verdicts_hold_p99_to_10_ms_not_15() -> None:
    result = ranker_result()
    result["recommend"]["fixed_rate"]["latency_ms"]["p99"] = 12.0
    assert ranker_verdicts(result)["p99"] is False
    assert verdicts(result)["p99"] is True  # the MMR path's target is unchanged


def test_a_fallback_answer_fails_the_saturation_target_however_fast() -> None:
    result = ranker_result()
    result["recommend"]["saturation"] = _saturation(
        5000.0, {"ranked": 14999, "personalized": 1}, {"ranker_budget": 1}
    )
    assert ranker_verdicts(result)["saturation_rps"] is False
    slow = ranker_result()
    slow["recommend"]["saturation"]["requests_per_s"] = 999.0
    assert ranker_verdicts(slow)["saturation_rps"] is False


def test_latency_is_not_judged_at_another_rate() -> None:
    result = ranker_result()
    result["config"]["rate"] = 100
    found = ranker_verdicts(result)
    assert found["p50"] is None
    assert found["p99"] is None
    assert "not judged" in ranker_table(result)


def test_ranker_table_puts_on_and_off_side_by_side() -> None:
    table = ranker_table(ranker_result())
    lines = table.splitlines()
    assert lines[0] == "| GET /recommend | ranker on | ranker off | target (ranker on) |"
    latency = next(line for line in lines if line.startswith("| p50 / p95 / p99 at 200"))
    assert "2.10 / 4.20 / 8.50 ms" in latency
    assert "1.60 / 3.20 / 6.00 ms" in latency
    assert "p50 < 3 ms: met; p99 < 10 ms: met" in latency
    achieved = next(line for line in lines if line.startswith("| achieved rate"))
    assert achieved.count("199.8 requests/s") == 2
    saturation = next(line for line in lines if line.startswith("| at saturation"))
    assert "**1,250 requests/s**" in saturation
    assert "**1,800 requests/s**" in saturation
    assert "every answer ranked: met" in saturation
    ranked_fixed = next(line for line in lines if line.startswith("| answers ranked at the fixed"))
    assert "600 of 600 (100.00%)" in ranked_fixed
    assert "0 of 600 (0.00%)" in ranked_fixed
    ranked_saturated = next(line for line in lines if line.startswith("| answers ranked at sat"))
    assert "3,750 of 3,750 (100.00%) (none)" in ranked_saturated
    assert "0 of 5,400 (0.00%) ({'ranker_off': 5400})" in ranked_saturated


def test_ranker_table_shows_a_missed_target() -> None:
    result = copy.deepcopy(ranker_result())
    result["recommend"]["fixed_rate"]["sources"] = {"ranked": 597, "personalized": 3}
    table = ranker_table(result)
    assert "597 of 600 (99.50%)" in table
    assert "all ranked: **not met**" in table


def test_the_headline_table_of_a_ranker_run_uses_its_targets() -> None:
    table = figures_table(ranker_result())
    assert "p99 < 10 ms: met" in table
    assert ">= 1,000, every answer ranked: met" in table
    assert "all ranked" in table
    assert "all personalized" not in table
    assert "not compared in a --ranker run" in table


def test_a_run_without_the_ranker_keeps_its_report() -> None:
    result = ranker_result()
    del result["ranker_off"], result["impressions"]
    result["config"]["ranker"] = False
    table = figures_table(result)
    assert "p99 < 15 ms: met" in table
    assert "all personalized" in table
    assert "--ranker" not in table
    assert "Ranker on against off" not in markdown(result, "plot.png")
    del result["config"]["ranker"]  # results saved before the option had no such key
    assert figures_table(result) == table


def test_the_report_of_a_ranker_run_has_the_side_by_side_table(tmp_path: Path) -> None:
    result = ranker_result()
    report = markdown(result, "plot.png")
    assert "Ranker on against off" in report
    assert ranker_table(result) in report
    assert "with its learned ranker" in report
    assert "fixed rate, /recommend, ranker off" in report
    assert "wrk, /recommend, ranker off" in report
    samples = {"recommend": [1.0, 2.0, 3.0], "live": [0.3, 0.4], "ranker_off": [1.0, 1.5]}
    plot(result, samples, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_the_report_shows_where_the_time_goes_when_it_was_recorded() -> None:
    result = ranker_result()
    assert "Where a request's time goes" not in markdown(result, "plot.png")  # older runs
    result["recommend"]["fixed_rate"]["time_breakdown"] = {
        "requests": 600,
        "mean_ms": {"request /recommend/{user_id}": 3.2, "stage rank": 0.61},
    }
    result["ranker_off"]["fixed_rate"]["time_breakdown"] = {
        "requests": 600,
        "mean_ms": {"request /recommend/{user_id}": 2.5},
    }
    report = markdown(result, "plot.png")
    assert "| where | mean ms (ranker on) | mean ms (ranker off) |" in report
    assert "| stage rank | 0.610 | none |" in report
    assert "| request /recommend/{user_id} | 3.200 | 2.500 |" in report
