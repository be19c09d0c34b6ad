"""The pure parts of `recsys bench api`: percentiles, the open-loop schedule, request paths,
the wrk script and the parsing of wrk's and the server's output."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from recsys.bench.api import (
    WRK_MARKER,
    BenchError,
    impression_counts,
    parse_wrk,
    recommend_paths,
    share,
    wrk_script,
)
from recsys.bench.open_loop import latency_summary, open_loop_schedule, parse_http_head

pytestmark = pytest.mark.unit


def test_latency_summary_is_in_milliseconds() -> None:
    summary = latency_summary([n / 1000 for n in range(1, 101)])  # 1..100 ms
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == pytest.approx(100.0)
    assert summary["mean"] == pytest.approx(50.5)
    assert latency_summary([]) == {}


def test_open_loop_schedule_is_evenly_spaced_and_bounded() -> None:
    schedule = open_loop_schedule(200, 30)
    assert len(schedule) == 6000
    assert schedule[0] == 0.0
    assert schedule[1] == pytest.approx(0.005)
    assert schedule[-1] < 30
    assert open_loop_schedule(0, 30) == []
    assert open_loop_schedule(200, 0) == []


def test_recommend_paths_cycle_through_every_user_evenly() -> None:
    users = [str(u) for u in range(1, 11)]
    paths = recommend_paths(users, 35, k=10, diversity=0.8, seed=3)
    assert len(paths) == 35
    per_user = Counter(p.split("/")[2].split("?")[0] for p in paths)
    assert set(per_user) == set(users)
    assert max(per_user.values()) - min(per_user.values()) <= 1
    assert all(p.endswith("?k=10&diversity=0.8") for p in paths)
    assert paths == recommend_paths(users, 35, k=10, diversity=0.8, seed=3)
    assert paths[:10] != recommend_paths(users, 35, k=10, diversity=0.8, seed=4)[:10]


WRK_OUTPUT = (
    "Running 30s test @ http://127.0.0.1:1234\n"
    "  1 threads and 8 connections\n"
    "  30000 requests in 30.00s, 40.00MB read\n"
    "Requests/sec:   1000.00\n"
    "Transfer/sec:      1.33MB\n"
    + WRK_MARKER
    + json.dumps(
        {
            "sources": {"personalized": 29990, "popular": 10},
            "reasons": {"redis_timeout": 10},
            "requests": 30000,
            "duration_us": 30_000_000,
            "bytes": 40_000_000,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": 2, "timeout": 1},
            "latency_us": {
                "p50": 7000,
                "p75": 8000,
                "p90": 9000,
                "p95": 10000,
                "p99": 15000,
                "p99.9": 20000,
                "max": 25000,
                "mean": 7500.5,
            },
        }
    )
    + "\n"
)


def test_parse_wrk_reads_the_done_hook_line() -> None:
    figures = parse_wrk(WRK_OUTPUT)
    assert figures["requests"] == 30000
    assert figures["requests_per_s"] == pytest.approx(1000.0)
    assert figures["wrk_printed_requests_per_s"] == pytest.approx(1000.0)
    assert figures["ok_requests"] == 29998
    assert figures["errors"]["timeout"] == 1
    assert figures["latency_ms"]["p99"] == pytest.approx(15.0)
    assert figures["latency_ms"]["mean"] == pytest.approx(7.5005)
    assert figures["sources"] == {"personalized": 29990, "popular": 10}
    assert figures["reasons"] == {"redis_timeout": 10}


def test_parse_wrk_without_the_hook_line_says_so() -> None:
    with pytest.raises(BenchError, match="no summary line"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_script_embeds_the_paths_and_the_marker() -> None:
    script = wrk_script(["/recommend/1?k=10", "/recommend/2?k=10"], count_sources=True)
    assert '"/recommend/1?k=10"' in script
    assert '"/recommend/2?k=10"' in script
    assert WRK_MARKER.strip() in script
    assert "response = function" in script
    assert "response = function" not in wrk_script(["/health/live"])


def test_parse_http_head() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\ncontent-type: application/json\r\n\r\n"
    assert parse_http_head(head) == (200, 42, True)
    closing = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n"
    assert parse_http_head(closing) == (503, None, False)
    assert parse_http_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == (200, 0, False)
    with pytest.raises(ValueError, match="status line"):
        parse_http_head(b"garbage\r\n\r\n")


def test_share() -> None:
    assert share({"personalized": 3, "popular": 1}, "personalized") == 0.75
    assert share({"popular": 1}, "personalized") == 0.0


def test_impression_counts_are_read_from_the_servers_metrics() -> None:
    text = (
        "# HELP recsys_api_impressions_sent_total Impressions\n"
        "recsys_api_impressions_sent_total 1200.0\n"
        'recsys_api_impressions_dropped_total{reason="queue_full"} 3.0\n'
        'recsys_api_impressions_dropped_total{reason="kafka_unavailable"} 7.0\n'
        "recsys_api_impressions_sent_created 1.7e9\n"
    )
    assert impression_counts(text) == {
        "sent": 1200.0,
        "dropped_queue_full": 3.0,
        "dropped_kafka_unavailable": 7.0,
    }
