"""The event archive against a real Kafka broker and a Delta table on local disk: every valid
event once, through a kill -9 and duplicate publishes; clear errors; upkeep commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from core.archive import ArchiveLocation
from core.clients import ensure_topics, kafka_producer
from core.settings import Settings
from recsys.processes import ArchiverProcess
from schemas.events import AnyEvent
from streams.archive.table import ArchiveTable
from tests.integration.test_stream_worker import as_messages, make_events

pytestmark = pytest.mark.integration

Sent = dict[tuple[str, int], int]  # the last offset published to each topic partition


def archive_settings(service_settings: Settings, tmp_path: Path) -> Settings:
    return service_settings.model_copy(
        update={
            "archive_uri": str(tmp_path / "events"),
            "archive_group_id": f"archive-{uuid.uuid4().hex[:8]}",
            "archive_batch_seconds": 0.2,
        }
    )


async def publish(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes]], per_second: float = 0
) -> Sent:
    """Publish in order (paced when `per_second`); returns the last offset per partition."""
    sent: Sent = {}
    producer = kafka_producer(settings)
    await producer.start()
    try:
        for n, (topic, key, value) in enumerate(messages):
            meta = await (await producer.send(topic, value, key=key))
            sent[topic, meta.partition] = max(sent.get((topic, meta.partition), -1), meta.offset)
            if per_second and n % 20 == 19:
                await asyncio.sleep(20 / per_second)
    finally:
        await producer.stop()
    return sent


async def archived_up_to(settings: Settings, sent: Sent, timeout_s: float = 60) -> DeltaTable:
    """Wait until the table records every offset of `sent`; returns the table."""
    location = ArchiveLocation(settings.archive_location, {})
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if table_exists(settings):
            table = ArchiveTable(location)
            if all(table.committed(sent).get(tp, -1) >= offset for tp, offset in sent.items()):
                return table.table
        await asyncio.sleep(0.25)
    raise AssertionError(f"the archive did not reach the published offsets within {timeout_s} s")


def table_exists(settings: Settings) -> bool:
    return os.path.isdir(os.path.join(settings.archive_location, "_delta_log"))


def rows_of(table: DeltaTable, events: list[AnyEvent]) -> list[str]:
    """The event ids of `events`' users in the table, one entry per row."""
    users = sorted({e.user_id for e in events})
    archived = table.to_pyarrow_table(columns=["event_id", "user_id"])
    mine = archived.filter(pc.is_in(archived.column("user_id"), value_set=pa.array(users)))
    ids: list[str] = mine.column("event_id").to_pylist()
    return ids


async def test_every_valid_event_is_archived_once_through_a_kill_and_duplicates(
    service_settings: Settings, tmp_path: Path
) -> None:
    settings = archive_settings(service_settings, tmp_path)
    await ensure_topics(settings)
    prefix = uuid.uuid4().hex[:6]
    events = make_events(prefix, users=30, count=1500)
    messages = as_messages(events)
    messages += as_messages(events[::10])  # 150 duplicate publishes, later in the stream
    messages.insert(700, ("events.view", b"k", b"{not json"))  # skipped, not archived

    first = ArchiverProcess(settings, tmp_path).start()
    try:
        producing = asyncio.create_task(publish(settings, messages, per_second=500))
        # Killed once something of this test's stream is in the table, while it still flows.
        while not table_exists(settings) or not rows_of(
            DeltaTable(settings.archive_location), events
        ):
            assert first.alive, first.log_tail()
            await asyncio.sleep(0.1)
        first.kill()
        at_kill = len(rows_of(DeltaTable(settings.archive_location), events))
        assert 0 < at_kill < len(events)
        second = ArchiverProcess(settings, tmp_path).start()
        try:
            sent = await producing
            table = await archived_up_to(settings, sent)
        finally:
            second.stop()
    finally:
        first.stop()
    ids = rows_of(table, events)
    assert len(ids) == len(set(ids)), "an event was archived twice"
    assert set(ids) == {str(e.event_id) for e in events}, "an event was lost"


async def test_archived_rows_keep_the_event_and_where_it_came_from(
    service_settings: Settings, tmp_path: Path
) -> None:
    settings = archive_settings(service_settings, tmp_path)
    await ensure_topics(settings)
    events = make_events(uuid.uuid4().hex[:6], users=3, count=30)
    archiver = ArchiverProcess(settings, tmp_path).start()
    try:
        sent = await publish(settings, as_messages(events))
        table = await archived_up_to(settings, sent)
        metrics = archiver.metrics()
    finally:
        archiver.stop()
    written = [
        line for line in metrics.splitlines() if line.startswith("recsys_archive_rows_total")
    ]
    assert written
    assert float(written[0].split()[-1]) >= len(events)
    assert table.metadata().partition_columns == ["event_date", "event_type"]
    by_id = {e.event_id.hex: e for e in events}
    rows = table.to_pyarrow_table().to_pylist()
    mine = [row for row in rows if uuid.UUID(row["event_id"]).hex in by_id]
    assert len(mine) == len(events)
    for row in mine:
        event = by_id[uuid.UUID(row["event_id"]).hex]
        assert (row["user_id"], row["item_id"], row["event_type"]) == (
            event.user_id, event.item_id, event.event_type,
        )  # fmt: skip
        assert row["ts"] == event.ts
        assert row["event_date"] == event.ts.strftime("%Y-%m-%d")
        assert row["topic"] == f"events.{event.event_type}"
        assert row["published_at"] >= row["ts"]


def test_an_unwritable_archive_location_is_a_clear_error_at_start(
    service_settings: Settings, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {
        **os.environ,
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": service_settings.kafka_bootstrap_servers,
        "RECSYS_ARCHIVE_URI": str(blocker / "events"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "archive", "run", "--metrics-port", "0"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot create the event archive" in done.stderr
    assert "RECSYS_ARCHIVE_URI" in done.stderr
    assert "Traceback" not in done.stderr
