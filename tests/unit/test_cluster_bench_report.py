"""`recsys bench cluster`'s summaries, verdicts and report, from hand-made run results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recsys.bench.cluster import stream_summary, topology_name
from recsys.bench.cluster_report import markdown, plot, verdicts

pytestmark = pytest.mark.unit


def stream_result(events_per_s: float, redis_by_node: dict[str, float]) -> dict[str, Any]:
    """A stream run's result; `redis_by_node` maps "redis@host:port" to each node's CPU, or is
    {"redis": figure} for one Redis (which reports no nodes)."""
    cpu: dict[str, float] = {"worker": 40.0, "apply process": 55.0, "kafka": 4.0}
    cpu |= redis_by_node
    cpu["redis"] = sum(redis_by_node.values())
    return {
        "throughput": {"events_per_s": events_per_s, "cpu_us_per_event": cpu},
        "freshness": {"seconds": {"p50": 0.02, "p99": 0.04}, "observed": 100, "events": 100},
        "memory": {"bytes_per_user": {"total_mean": 1000.0}},
        "bytes_per_item": {"redis_vectors": 300.0},
    }


def cluster_result(cluster_rate: float, cluster_nodes: dict[str, float]) -> dict[str, Any]:
    return {
        "config": {"shards": [3], "stream": {"events": 1000, "users": 10,
                                             "freshness_rate": 100, "freshness_seconds": 1.0}},
        "stream": [
            stream_summary(stream_result(10_000, {"redis": 16.0}), None),
            stream_summary(stream_result(cluster_rate, cluster_nodes), 3),
        ],
        "api": [],
    }  # fmt: skip


THREE_NODES = {
    "redis@127.0.0.1:7002": 5.0,
    "redis@127.0.0.1:7000": 6.0,
    "redis@127.0.0.1:7001": 4.0,
}


def test_a_cluster_run_keeps_each_node_apart_from_the_totals() -> None:
    summary = stream_summary(stream_result(9_000, THREE_NODES), 3)
    assert summary["topology"] == "cluster, 3 masters"
    assert summary["redis_cpu_us_per_event_by_node"] == [4.0, 5.0, 6.0]
    assert summary["cpu_us_per_event"]["redis"] == 15.0
    assert not any("@" in name for name in summary["cpu_us_per_event"])
    assert summary["freshness_ms"]["p99"] == pytest.approx(40.0)
    # One Redis: its one figure is its "node".
    alone = stream_summary(stream_result(9_000, {"redis": 16.0}), None)
    assert alone["redis_cpu_us_per_event_by_node"] == [16.0]
    assert topology_name(None) == "one Redis"
    assert topology_name(1) == "cluster, 1 master"


def test_targets_met_within_ten_percent_and_no_more_redis_cpu() -> None:
    met = verdicts(cluster_result(9_500, THREE_NODES))  # 95%, 15 µs against 16
    assert [verdict.endswith(": met") for _, _, verdict in met] == [True, True]
    assert "95%" in met[0][1]


def test_targets_missed_are_said_so() -> None:
    slow = {name: us * 2 for name, us in THREE_NODES.items()}  # 30 µs against 16
    missed = verdicts(cluster_result(7_000, slow))
    assert ["not met" in verdict for _, _, verdict in missed] == [True, True]
    assert "70%" in missed[0][1]


def test_the_report_has_both_tables_and_a_plot(tmp_path: Path) -> None:
    result = cluster_result(9_000, THREE_NODES)
    result["api"] = [
        {"topology": name, "rate": 200, "latency_ms": {"p50": 1.5, "p99": 3.0}, "errors": {},
         "saturation_requests_per_s": 2000.0,
         "saturation_errors": {"connect": 0, "timeout": 3 if name != "one Redis" else 0},
         "server_cpu_us_per_request": 900.0, "redis_cpu_us_per_request": 40.0}
        for name in ("one Redis", "cluster, 3 masters")
    ]  # fmt: skip
    text = markdown(result, "plot.png")
    assert "| cluster, 3 masters | 9,000 (90%) |" in text
    assert "4.0 + 5.0 + 6.0" in text
    assert "1.50 / 3.00 ms at 200 requests/s" in text
    assert "| none / none |" in text
    assert "| none / timeout 3 |" in text
    plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
