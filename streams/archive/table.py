"""The archive's Delta table as the archiver writes it: appends that carry their Kafka offsets.

Blocking calls (delta-rs does its own I/O); the archiver runs them in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from core.archive import (
    ARCHIVE_SCHEMA,
    PARTITION_COLUMNS,
    ArchiveError,
    ArchiveLocation,
    app_id,
)
from streams.archive.maintenance import compact

TopicPartition = tuple[str, int]

# Each commit adds one small file per partition it writes, and the DeltaTable object holds every
# active file's entry (with its statistics) in memory, more once it has been updated by many
# commits than when loaded afresh: an archiver's RSS grew without bound (+270 MB an hour at
# 1,000 events/s in `recsys bench soak`) and its commits got slower. delta-rs already writes a
# checkpoint every 100 commits, which does not shrink what is loaded; compacting the days just
# written every so many commits does (the way Delta's auto-compaction works). The target is
# small because a file that reaches it is not rewritten again, which bounds the rewriting;
# `recsys archive compact` (128 MB) merges further. Both could become settings.
COMPACT_EVERY_COMMITS = 100
COMPACT_TARGET_MB = 32


class ArchiveTable:
    """Opens (creating it if absent) the table at `location`; `append` writes rows and the
    offsets they cover in one commit; `committed` reads those offsets back; `compact_if_due`,
    called after appends, keeps the files of the days appended to few."""

    def __init__(
        self, location: ArchiveLocation, compact_every: int = COMPACT_EVERY_COMMITS
    ) -> None:
        self.location = location
        self.compact_every = compact_every
        self._table = self._open()
        self._appends_since_compaction = 0
        self._days_appended: set[str] = set()

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
        self._appends_since_compaction += 1
        self._days_appended.update(pc.unique(rows.column("event_date")).to_pylist())
        return int(self._table.version())

    def compact_if_due(self) -> dict[str, int] | None:
        """Every `compact_every` appends, rewrite the small files of the days appended to since
        the last time into few (`COMPACT_TARGET_MB`); returns the files removed and added, None
        when not due. A failure (another archiver compacting the same day, say) is raised and
        the next try comes `compact_every` appends later; appends are never affected."""
        if self._appends_since_compaction < self.compact_every:
            return None
        days, self._days_appended = sorted(self._days_appended), set()
        self._appends_since_compaction = 0
        done = {"files_removed": 0, "files_added": 0}
        for day in days:
            for key, count in compact(self._table, COMPACT_TARGET_MB, event_date=day).items():
                done[key] += count
        return done

    def event_ids_since(self, archived_after_ms: int) -> list[str]:
        """Event ids of the rows archived after `archived_after_ms` (epoch ms): what a restarted
        archiver keeps to catch a duplicate publish of an event already archived."""
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
        # A compacted file is new but may hold rows archived long before.
        archived_after = ds.field("archived_at") >= pa.scalar(
            archived_after_ms, pa.timestamp("ms", tz="UTC")
        )
        ids: list[str] = []
        for fragment in fragments:
            rows = fragment.to_table(columns=["event_id"], filter=archived_after)
            ids += rows.column("event_id").to_pylist()
        return ids
