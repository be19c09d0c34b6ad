"""The no-op drain that measures Faust's own ceiling in `recsys bench stream`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams import noop_drain
from streams.bench_report import figures_table

pytestmark = pytest.mark.unit


class ExitCalledError(Exception):
    pass


def _raise_exited(code: int) -> None:
    raise ExitCalledError(code)


async def test_counts_to_the_total_then_writes_the_rate_and_exits(tmp_path: Path) -> None:
    clock = iter([10.0, 10.5, 12.0])
    out = tmp_path / "drain.json"
    processor = noop_drain.CountingProcessor(
        total=250, out=out, clock=lambda: next(clock), exit_process=_raise_exited
    )

    await processor.process([object()] * 100)
    await processor.process([object()] * 100)
    assert not out.exists()
    with pytest.raises(ExitCalledError):
        await processor.process([object()] * 50)

    # The first batch starts the clock and is not counted: 150 events in 2 s.
    assert json.loads(out.read_text()) == {"events": 250, "seconds": 2.0, "events_per_s": 75.0}


def test_the_report_shows_the_ceiling_next_to_the_worker_rate() -> None:
    result = {
        "config": {"events": 1000},
        "throughput": {"events_per_s": 6000.0},
        "faust_noop_drain": {"events_per_s": 11900.0},
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
    table = figures_table(result)
    assert "**6,000 events/s**" in table
    assert "applies nothing | 11,900 events/s |" in table
    assert "applies nothing" not in figures_table({**result, "faust_noop_drain": None})
