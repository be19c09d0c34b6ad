"""`recsys bench archive`: how fast `recsys archive run` writes Kafka's events into the Delta
table, how soon a published event can be read from it, and what an event costs on disk.

On throwaway local Kafka (or the configured one with --use-running) and a table in a scratch
directory:

1. Throughput: a backlog of events is published first; one archiver process (`recsys archive
   run`, its own process as in production) then drains it. The rate is taken from its
   `recsys_archive_rows_total` after the first commit to the last (start-up excluded; the rate
   with start-up is reported too), with the archiver's CPU time per event.
2. Latency: with the archiver caught up, events are published at a fixed rate, each send time
   recorded; a reader polls the table every `POLL_S` and records when each event's row becomes
   visible (the commit that adds its file). Latency is publish -> visible to a reader: what a
   training job or a query sees.
3. Bytes per event on disk: the table's Parquet files over its rows, as written (one file per
   partition and commit) and after `recsys archive compact`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq

from core.archive import ArchiveLocation
from core.clients import ensure_topics, kafka_producer
from core.settings import Settings
from infra.local.process import process_cpu_seconds
from recsys.bench.common import percentiles
from recsys.processes import ArchiverProcess
from schemas import POSITIVE_EVENT_TYPES, encode_event, event_key, new_event, topic_for

POLL_S = 0.05
_ROWS = re.compile(r"^recsys_archive_rows_total (\S+)$", re.MULTILINE)


class ArchiveBenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


@dataclass(frozen=True)
class ArchiveBenchConfig:
    events: int = 200_000
    users: int = 20_000
    items: int = 5_000
    latency_rate: int = 1_000
    latency_seconds: float = 30.0
    batch_events: int = 20_000
    batch_seconds: float = 1.0
    drain_timeout_s: float = 600.0
    seed: int = 0


def _events(config: ArchiveBenchConfig, count: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    users = rng.integers(config.users, size=count)
    items = np.minimum(rng.zipf(1.3, size=count) - 1, config.items - 1)
    kinds = rng.choice(len(POSITIVE_EVENT_TYPES), size=count, p=[0.8, 0.15, 0.05])
    now = datetime.now(UTC)
    return [
        new_event(POSITIVE_EVENT_TYPES[kinds[n]], f"u{users[n]}", f"i{items[n]}", ts=now)
        for n in range(count)
    ]


async def _publish(
    settings: Settings, events: list[Any], rate: float | None = None
) -> dict[str, float]:
    """Send `events` (as fast as possible, or paced at `rate`); each event id -> send time."""
    producer = kafka_producer(settings, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    sent: dict[str, float] = {}
    started = time.perf_counter()
    try:
        for n, event in enumerate(events):
            if rate is not None:
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent[str(event.event_id)] = time.time()
            await producer.send(
                topic_for(event.event_type), encode_event(event), key=event_key(event)
            )
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _rows_written(archiver: ArchiverProcess) -> float:
    try:
        found = _ROWS.search(archiver.metrics())
    except (OSError, httpx.HTTPError):  # not listening yet
        return 0.0
    return float(found.group(1)) if found else 0.0


async def drain(archiver: ArchiverProcess, expected: int, timeout_s: float) -> dict[str, Any]:
    """Poll the archiver's row counter until it reaches `expected`."""
    started = time.monotonic()
    series: list[tuple[float, float]] = []
    first: tuple[float, float] | None = None
    while True:
        now = time.monotonic() - started
        rows = _rows_written(archiver)
        series.append((now, rows))
        if rows > 0 and first is None:
            first = (now, rows)
        if rows >= expected:
            break
        if now > timeout_s or not archiver.alive:
            raise ArchiveBenchError(
                f"the archiver wrote {rows:,.0f} of {expected:,} events in {now:.0f} s; its "
                f"log:\n{archiver.log_tail()}"
            )
        await asyncio.sleep(0.2)
    end = series[-1][0]
    assert first is not None
    return {
        "events": expected,
        "seconds_with_startup": end,
        "events_per_s_with_startup": expected / end,
        # From the first commit on: the rows of later commits over the time they took.
        "events_per_s": (expected - first[1]) / (end - first[0]) if end > first[0] else None,
        "series": series,
    }


class _Reader:
    """Polls the table and records when each event id first becomes visible."""

    def __init__(self, location: ArchiveLocation) -> None:
        from deltalake import DeltaTable

        self.table = DeltaTable(location.uri, storage_options=location.storage_options)
        self.seen_files = set(self.table.file_uris())
        self.visible: dict[str, float] = {}

    def poll(self) -> None:
        self.table.update_incremental()
        files = set(self.table.file_uris())
        new = files - self.seen_files
        if not new:
            return
        now = time.time()
        for uri in new:
            for event_id in pq.read_table(uri, columns=["event_id"]).column(0).to_pylist():
                self.visible.setdefault(event_id, now)
        self.seen_files = files


async def _latency(
    settings: Settings, config: ArchiveBenchConfig, archiver: ArchiverProcess
) -> dict[str, Any]:
    reader = _Reader(ArchiveLocation.of(settings))
    events = _events(config, int(config.latency_rate * config.latency_seconds), config.seed + 1)
    expected: set[str] = set()
    caught_up = asyncio.Event()

    async def poll_forever() -> None:
        while True:
            await asyncio.to_thread(reader.poll)
            if expected and expected <= reader.visible.keys():
                caught_up.set()
            await asyncio.sleep(POLL_S)

    poller = asyncio.create_task(poll_forever())
    cpu_before = process_cpu_seconds(archiver.pid)
    sent = await _publish(settings, events, rate=config.latency_rate)
    expected.update(sent)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(caught_up.wait(), timeout=60)
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    cpu = process_cpu_seconds(archiver.pid) - cpu_before
    latencies = [reader.visible[i] - t for i, t in sent.items() if i in reader.visible]
    return {
        "offered_rate": config.latency_rate,
        "seconds": config.latency_seconds,
        "events": len(sent),
        "visible": len(latencies),
        "missing": len(sent) - len(latencies),
        "latency_s": percentiles(latencies),
        "archiver_cpu_share": cpu / config.latency_seconds,
        "samples": latencies,
    }


def _disk(settings: Settings, target_mb: int = 128) -> dict[str, Any]:
    from streams.archive.maintenance import compact, open_existing, summary

    table = open_existing(ArchiveLocation.of(settings))
    before = summary(table)
    compacted = compact(table, target_mb)
    table.update_incremental()
    after = summary(table)
    return {
        "rows": before.rows,
        "files": before.files,
        "bytes": before.bytes,
        "bytes_per_event": before.bytes_per_row,
        "compacted": compacted,
        "files_after_compact": after.files,
        "bytes_per_event_after_compact": after.bytes_per_row,
    }


async def run(settings: Settings, config: ArchiveBenchConfig, work_dir: Path) -> dict[str, Any]:
    settings = settings.model_copy(
        update={
            "archive_uri": str(work_dir / "archive" / "events"),
            "archive_group_id": f"recsys-bench-archive-{time.time_ns()}",
            "archive_batch_seconds": config.batch_seconds,
        }
    )
    await ensure_topics(settings)
    published_at = time.perf_counter()
    await _publish(settings, _events(config, config.events, config.seed))
    publish_s = time.perf_counter() - published_at
    archiver = ArchiverProcess(
        settings, work_dir, {"RECSYS_ARCHIVE_BATCH_EVENTS": str(config.batch_events)}
    ).start()
    try:
        drained = await drain(archiver, config.events, config.drain_timeout_s)
        drain_cpu = process_cpu_seconds(archiver.pid)
        latency = await _latency(settings, config, archiver)
    finally:
        archiver.stop()
    return {
        "benchmark": "archive",
        "config": asdict(config),
        "backlog_publish_events_per_s": config.events / publish_s,
        "throughput": drained | {"archiver_cpu_us_per_event": drain_cpu / config.events * 1e6},
        "latency": latency,
        "disk": _disk(settings),
    }


def run_with_local_services(config: ArchiveBenchConfig, use_running: bool) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    with bench_services(use_running, "recsys-bench-archive-") as (settings, work_dir):
        return asyncio.run(run(settings, config, work_dir))
