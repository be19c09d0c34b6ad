"""The archive's Delta table as the archiver writes it: appends that carry their Kafka offsets.

Blocking calls (delta-rs does its own I/O); the archiver runs them in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from core.archive import (
    ARCHIVE_SCHEMA,
    PARTITION_COLUMNS,
    ArchiveError,
    ArchiveLocation,
    app_id,
)

TopicPartition = tuple[str, int]


class ArchiveTable:
    """Opens (creating it if absent) the table at `location`; `append` writes rows and the
    offsets they cover in one commit; `committed` reads those offsets back."""

    def __init__(self, location: ArchiveLocation) -> None:
        self.location = location
        self._table = self._open()

    def _open(self) -> DeltaTable:
        uri, options = self.location.uri, self.location.storage_options
        try:
            return DeltaTable(uri, storage_options=options)
        except TableNotFoundError:
            pass
        except (DeltaError, OSError) as exc:
            raise ArchiveError(f"cannot open the event archive at {uri}: {exc}") from exc
        try:
            return DeltaTable.create(
                uri,
                ARCHIVE_SCHEMA,
                partition_by=list(PARTITION_COLUMNS),
                mode="ignore",  # another archiver may create it at the same moment
                name="recsys_events",
                description="Every valid event, once (recsys archive)",
                storage_options=options,
            )
        except (DeltaError, OSError) as exc:
            raise ArchiveError(
                f"cannot create the event archive at {uri}: {exc}. Point RECSYS_ARCHIVE_URI "
                "at a location this process may write (and RECSYS_ARCHIVE_STORAGE_OPTIONS at "
                "its credentials), or fix the permissions."
            ) from exc

    @property
    def table(self) -> DeltaTable:
        return self._table

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The last offset archived from each of `partitions`, as the table's latest commit
        records (absent: nothing archived from it yet)."""
        self._table.update_incremental()
        found = {}
        for topic, partition in partitions:
            version = self._table.transaction_version(app_id(topic, partition))
            if version is not None:
                found[topic, partition] = int(version)
        return found

    def append(self, rows: pa.Table, offsets: Mapping[TopicPartition, int]) -> int:
        """Append `rows` and record `offsets` (the last offset of each topic partition they
        were read up to) in the same commit; returns the table version written."""
        now_ms = int(time.time() * 1000)
        transactions = [
            Transaction(app_id=app_id(topic, partition), version=offset, last_updated=now_ms)
            for (topic, partition), offset in sorted(offsets.items())
        ]
        write_deltalake(
            self._table,
            rows,
            mode="append",
            partition_by=list(PARTITION_COLUMNS),
            schema_mode="merge",  # a table created by an older version gains the new columns
            commit_properties=CommitProperties(
                app_transactions=transactions, max_commit_retries=20
            ),
        )
        return int(self._table.version())

    def event_ids_since(self, archived_after_ms: int) -> list[str]:
        """Event ids of the rows in files written after `archived_after_ms` (epoch ms): what a
        restarted archiver keeps to catch a duplicate publish of an event already archived."""
        actions = pa.table(self._table.get_add_actions(flatten=True))
        if actions.num_rows == 0:
            return []
        written_ms = actions.column("modification_time").to_pylist()  # epoch ms
        recent = {
            path
            for path, written in zip(actions.column("path").to_pylist(), written_ms, strict=True)
            if written >= archived_after_ms
        }
        if not recent:
            return []
        dataset = self._table.to_pyarrow_dataset()
        fragments = [f for f in dataset.get_fragments() if f.path in recent]
        ids: list[str] = []
        for fragment in fragments:
            ids += fragment.to_table(columns=["event_id"]).column("event_id").to_pylist()
        return ids
