"""The P3 replay's report: intervals next to the figures and issue 18's verdicts on the ranked
configuration."""

from __future__ import annotations

from typing import Any

import pytest

from batch.evaluation.prequential import PrequentialScores
from recsys.replay.report import figures_table

pytestmark = pytest.mark.unit


def entry(ranks: list[int | None]) -> dict[str, Any]:
    scores = PrequentialScores()
    for n, rank in enumerate(ranks):
        scores.add(rank, warm=n % 2 == 0)
    summary = scores.summary()
    return {**summary["overall"], "warm": summary["warm"], "cold": summary["cold"]}


def test_a_summary_carries_the_95_percent_interval_of_its_mean() -> None:
    found = entry([1, None, 3, None] * 50)  # HR@10 0.5 over 200 events
    low, high = found["hr@10_ci95"]
    assert found["hr@10"] == 0.5
    assert low < 0.5 < high
    assert high - low == pytest.approx(2 * 1.96 * 0.5 / 200**0.5, abs=1e-3)


def test_the_ranked_configuration_is_judged_against_the_targets_and_its_twin() -> None:
    ranked = entry([1] * 24 + [None] * 76)  # HR@10 0.24
    result = {
        "dataset": "ml-100k",
        "configurations": {"ranked": ranked, "in-process-ranked": ranked},
    }
    table = figures_table(result)
    assert "| HR@10 >= 0.23 | 0.2400 [" in table
    assert "| live equals its in-process replay |" in table
    assert "**not met**" not in table
    short = {**ranked, "hr@10": 0.2}
    other = figures_table(
        {"dataset": "ml-100k", "configurations": {"ranked": short, "in-process-ranked": ranked}}
    )
    assert other.count("**not met**") >= 2  # HR@10 below 0.23, and live differs from its twin
    assert (
        figures_table({"dataset": "unknown", "configurations": {"ranked": ranked}}).count(
            "target (two-stage"
        )
        == 0
    )
