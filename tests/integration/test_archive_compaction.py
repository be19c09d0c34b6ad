"""The archiver compacts the days it writes every so many commits, so that the table's active
files, and the memory of the DeltaTable that lists them, stay bounded (a Delta table on local
disk, no broker)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord
from deltalake import DeltaTable

from core.archive import ArchiveLocation, app_id
from core.settings import Settings
from schemas.codec import encode_event
from schemas.events import EventType, new_event
from streams.archive.archiver import Archiver
from streams.archive.rows import Rows
from streams.archive.table import ArchiveTable

pytestmark = pytest.mark.integration

KINDS: tuple[EventType, ...] = ("view", "click", "purchase")


def records(batch: int) -> list[ConsumerRecord[bytes, bytes]]:
    """One event of each kind, at offset `batch` of its topic's partition 0."""
    return [
        ConsumerRecord(
            topic=f"events.{kind}",
            partition=0,
            offset=batch,
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=b"u1",
            value=encode_event(new_event(kind, "u1", f"i{batch}")),
            checksum=None,
            serialized_key_size=2,
            serialized_value_size=0,
            headers=[],
        )
        for kind in KINDS
    ]


async def test_the_archiver_keeps_the_files_of_its_commits_few(tmp_path: Path) -> None:
    uri = str(tmp_path / "events")
    table = ArchiveTable(ArchiveLocation(uri, {}), compact_every=4)
    archiver = Archiver(Settings(), table)
    for batch in range(10):
        archiver._take(records(batch))
        await archiver.flush()

    written = DeltaTable(uri)
    # One file per event type and commit: 30 without compaction; compacted after the 4th and
    # 8th commits, then two more commits.
    assert len(written.file_uris()) == len(KINDS) * 3
    assert written.to_pyarrow_table(columns=["event_id"]).num_rows == 10 * len(KINDS)
    for kind in KINDS:
        assert written.transaction_version(app_id(f"events.{kind}", 0)) == 9


def test_a_compacted_file_seeds_only_the_ids_archived_in_the_window(tmp_path: Path) -> None:
    table = ArchiveTable(ArchiveLocation(str(tmp_path / "events"), {}), compact_every=4)

    def append(batch: int) -> list[str]:
        rows = Rows()
        for kind in KINDS:
            rows.add(new_event(kind, "u1", f"i{batch}"), f"events.{kind}", 0, batch, 0)
        table.append(rows.table(), {(f"events.{kind}", 0): batch for kind in KINDS})
        return [str(e) for e in rows.columns["event_id"]]

    for batch in range(3):
        append(batch)
    time.sleep(0.01)
    since_ms = int(time.time() * 1000)
    time.sleep(0.01)
    recent = append(3)
    assert table.compact_if_due() == {"files_removed": 4 * len(KINDS), "files_added": len(KINDS)}

    # Every file is new after compaction; only the last commit's rows are in the window.
    assert sorted(table.event_ids_since(since_ms)) == sorted(recent)
    assert table.compact_if_due() is None
