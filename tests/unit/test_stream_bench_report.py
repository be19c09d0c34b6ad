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


def test_bytes_per_item_show_when_measured_and_cluster_nodes_get_a_row() -> None:
    result = json.loads(RESULT.read_text())
    result.pop("bytes_per_item", None)
    result["throughput"]["cpu_us_per_event"] = {"worker": 40.0, "redis": 20.0}
    assert "bytes per item" not in figures_table(result)
    assert "by cluster node" not in figures_table(result)

    result["bytes_per_item"] = {
        "redis_vectors": 301.2, "redis_payloads": 88.9, "vector_index_on_disk": 1234.0
    }  # fmt: skip
    result["throughput"]["cpu_us_per_event"] |= {"redis@h:1": 12.0, "redis@h:2": 8.0}
    table = figures_table(result)
    assert "| 301 / 89 / 1,234 bytes |" in table
    assert "h:1: 12.0 µs / h:2: 8.0 µs" in table
    assert "worker / redis | 40 / 20 µs" in table  # the nodes are not counted twice
