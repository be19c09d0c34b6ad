"""Prometheus metrics of the archiver (namespace `recsys`, subsystem `archive`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from streams.archive.archiver import BatchOutcome

ROWS = Counter("recsys_archive_rows_total", "Events written to the archive.")
SKIPPED = Counter(
    "recsys_archive_skipped_total",
    "Messages not written, by reason.",
    ["reason"],  # invalid | duplicate | redelivered
)
COMMITS = Counter("recsys_archive_commits_total", "Commits to the archive's Delta table.")
WRITE_ERRORS = Counter(
    "recsys_archive_write_errors_total", "Failed attempts to write a batch (retried until done)."
)
COMMIT_SECONDS = Histogram(
    "recsys_archive_commit_seconds",
    "Time to write one batch's files and commit them.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG_SECONDS = Gauge(
    "recsys_archive_lag_seconds",
    "Age of the oldest event of the last commit when it was committed (publish -> archived); "
    "while a write keeps failing, the age of the oldest event waiting for it.",
)
LAST_COMMIT = Gauge(
    "recsys_archive_last_commit_timestamp_seconds", "When the archive was last committed to."
)


def record(outcome: BatchOutcome, records: list[Any]) -> None:
    now = time.time()
    ROWS.inc(outcome.rows)
    SKIPPED.labels("invalid").inc(outcome.invalid)
    SKIPPED.labels("duplicate").inc(outcome.duplicates)
    SKIPPED.labels("redelivered").inc(outcome.redelivered)
    if outcome.rows:
        COMMITS.inc()
        LAST_COMMIT.set(now)
    if records:
        LAG_SECONDS.set(max(0.0, now - min(r.timestamp for r in records) / 1000))


def write_failed(records: list[Any]) -> None:
    """A batch's write failed and will be retried. The lag is otherwise set only by a commit, so
    without this it would stay at its last (small) value for as long as the table cannot be
    written (a full disk, say), and RecsysArchiveLagging would never fire."""
    WRITE_ERRORS.inc()
    if records:
        LAG_SECONDS.set(max(0.0, time.time() - min(r.timestamp for r in records) / 1000))
