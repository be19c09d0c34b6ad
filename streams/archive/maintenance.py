"""Upkeep of the archive's table: compaction, retention and a summary (`recsys archive`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from deltalake import DeltaTable

from core.archive import ArchiveLocation, app_id


@dataclass(frozen=True)
class Summary:
    version: int
    files: int
    rows: int
    bytes: int
    first_day: str | None
    last_day: str | None
    offsets: dict[str, int]  # "topic:partition" -> the last offset archived

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


def open_existing(location: ArchiveLocation) -> DeltaTable:
    return DeltaTable(location.uri, storage_options=location.storage_options)


def summary(table: DeltaTable) -> Summary:
    actions = pa.table(table.get_add_actions(flatten=True))
    days = (
        sorted(set(actions.column("partition.event_date").to_pylist())) if actions.num_rows else []
    )
    # The partitions the rows came from, then what each one's transaction records.
    read_from = (
        table.to_pyarrow_table(columns=["topic", "partition"])
        .group_by(["topic", "partition"])
        .aggregate([])
    )
    offsets = {}
    for topic, partition in zip(
        read_from.column("topic").to_pylist(),
        read_from.column("partition").to_pylist(),
        strict=True,
    ):
        version = table.transaction_version(app_id(topic, partition))
        if version is not None:
            offsets[f"{topic}:{partition}"] = int(version)
    return Summary(
        version=int(table.version()),
        files=actions.num_rows,
        rows=int(pa.compute.sum(actions.column("num_records")).as_py() or 0),
        bytes=int(pa.compute.sum(actions.column("size_bytes")).as_py() or 0),
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        offsets=dict(sorted(offsets.items())),
    )


def compact(table: DeltaTable, target_mb: int, event_date: str | None = None) -> dict[str, int]:
    """Rewrite each partition's small files (of one `event_date` if given) into files of about
    `target_mb` (the archivers write one per partition and commit); readers see the same rows
    throughout."""
    metrics = table.optimize.compact(
        partition_filters=[("event_date", "=", event_date)] if event_date else None,
        target_size=target_mb * 1024 * 1024,
    )
    return {
        "files_removed": int(metrics.get("numFilesRemoved", 0)),
        "files_added": int(metrics.get("numFilesAdded", 0)),
    }


def apply_retention(table: DeltaTable, keep_days: int, now: datetime | None = None) -> int:
    """Delete the days older than `keep_days` (by event date) from the table; returns the rows
    deleted. Their files stay readable by time travel until `vacuum` removes them."""
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=keep_days)).strftime("%Y-%m-%d")
    metrics = table.delete(f"event_date < '{cutoff}'")
    return int(metrics.get("num_deleted_rows", 0))


def vacuum(table: DeltaTable, retention_hours: int) -> list[str]:
    """Remove the files no version newer than `retention_hours` reads (replaced by compaction,
    deleted by retention); returns their paths."""
    return list(
        table.vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
        )
    )
