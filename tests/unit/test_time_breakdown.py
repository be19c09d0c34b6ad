"""`recsys.bench.time_breakdown`: the server's histograms turned into mean time per request."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from recsys.bench.time_breakdown import RECOMMEND_ROUTE, breakdown

pytestmark = pytest.mark.unit


def _served(requests: list[float], stages: dict[str, list[float]]) -> str:
    registry = CollectorRegistry()
    request = Histogram(
        "recsys_api_request_duration_seconds", "", ["route", "method"], registry=registry
    )
    stage = Histogram("recsys_api_stage_duration_seconds", "", ["stage"], registry=registry)
    for seconds in requests:
        request.labels(RECOMMEND_ROUTE, "GET").observe(seconds)
    request.labels("/health/live", "GET").observe(5.0)  # another route: not counted
    for name, observed in stages.items():
        for seconds in observed:
            stage.labels(name).observe(seconds)
    return generate_latest(registry).decode()


def test_the_means_are_of_the_run_alone_over_every_request() -> None:
    before = _served([0.010], {"rank": [0.004]})
    after = _served([0.010, 0.002, 0.004], {"rank": [0.004, 0.001, 0.001], "mmr": [0.0005]})
    found = breakdown(before, after)
    assert found["requests"] == 2
    means = found["mean_ms"]
    assert means[f"request {RECOMMEND_ROUTE}"] == pytest.approx(3.0)
    assert means["stage rank"] == pytest.approx(1.0)
    assert means["stage mmr"] == pytest.approx(0.25)  # one of the two requests ran it


def test_no_request_in_the_run_gives_no_means() -> None:
    text = _served([0.010], {})
    assert breakdown(text, text) == {"requests": 0, "mean_ms": {}}
