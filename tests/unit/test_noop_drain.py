"""The no-op drain that measures Faust's own ceiling in `recsys bench stream`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recsys.bench import noop_drain
from recsys.bench.stream_report import figures_table

pytestmark = pytest.mark.unit


class ExitCalledError(Exception):
    pass


def _raise_exited(code: int) -> None:
    raise ExitCalledError(code)


async def test_counts_to_the_total_then_writes_the_rate_and_exits(tmp_path: Path) -> None:
    clock = iter([10.0, 10.5, 12.0])
    cpu_clock = iter([1.0, 1.2, 1.3])
    out = tmp_path / "drain.json"
    processor = noop_drain.CountingProcessor(
        total=250,
        out=out,
        clock=lambda: next(clock),
        exit_process=_raise_exited,
        cpu_clock=lambda: next(cpu_clock),
    )

    await (await processor.submit([object()] * 100))
    await (await processor.submit([object()] * 100))
    assert not out.exists()
    with pytest.raises(ExitCalledError):
        await processor.submit([object()] * 50)

    # The first batch starts the clocks and is not counted: 150 events in 2 s and 0.3 s of CPU.
    written = json.loads(out.read_text())
    assert written.pop("cpu_us_per_event") == pytest.approx(2000.0)
    assert written == {"events": 250, "seconds": 2.0, "events_per_s": 75.0}


def _bench_result(throughput: dict[str, Any], ceiling: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "config": {"events": 1000},
        "throughput": throughput,
        "faust_noop_drain": ceiling,
        "freshness": {
            "offered_rate": 1000,
            "achieved_rate": 1000.0,
            "observed": 10,
            "events": 10,
            "seconds": {"p50": 0.02, "p95": 0.04, "p99": 0.05, "max": 0.09},
        },
        "memory": {
            "bytes_per_user": {
                "total_mean": 990.0,
                "total_p95": 1300.0,
                "vector": 256.0,
                "history": 197.0,
                "event_ids": 121.0,
            },
            "mean_events_per_user": 10.0,
        },
        "producer_events_per_s": 48000.0,
    }


def test_the_report_shows_the_ceiling_next_to_the_worker_rate() -> None:
    table = figures_table(_bench_result({"events_per_s": 6000.0}, {"events_per_s": 11900.0}))
    assert "**6,000 events/s**" in table
    assert "applies nothing | 11,900 events/s |" in table
    assert "applies nothing" not in figures_table(_bench_result({"events_per_s": 6000.0}, None))


def test_the_report_adds_up_the_cpu_of_every_process_per_event() -> None:
    cpu = {"worker": 150.0, "redis": 25.0, "kafka": 10.0}
    table = figures_table(
        _bench_result(
            {"events_per_s": 6000.0, "cpu_us_per_event": cpu},
            {"events_per_s": 13000.0, "cpu_us_per_event": 70.0},
        )
    )
    # 185 µs per event at 10,000 events/s is 1.85 s of CPU per second.
    assert "draining: worker / redis / kafka | 150 / 25 / 10 µs: 1.85 cores" in table
    assert "13,000 events/s, 70 µs of CPU per event" in table
