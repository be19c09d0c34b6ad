"""The stream benchmark's table: targets, and what shares the cores in the offered-rate sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.bench.stream_report import figures_table

pytestmark = pytest.mark.unit

RESULT = Path(__file__).parents[2] / "docs" / "benchmarks" / "bench-stream.json"


def test_the_table_names_each_sweep_rate_and_the_producers_cpu_when_measured() -> None:
    result = json.loads(RESULT.read_text())
    for run in result["sweep"]:
        run.pop("bench_process_cpu_us_per_event", None)
    result["sweep"][0]["bench_process_cpu_us_per_event"] = 123.4

    table = figures_table(result)

    rows = [line for line in table.splitlines() if line.startswith("| offered ")]
    assert len(rows) == len(result["sweep"])
    assert "the benchmark's producer: 123 µs of CPU per event" in rows[0]
    assert all("producer" not in row for row in rows[1:])  # earlier runs did not measure it
    throughput = f"{result['throughput']['events_per_s']:,.0f} events/s"
    assert f"| **{throughput}** | >= 10,000 |" in table
