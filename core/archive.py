"""The event archive: one Delta Lake table of every valid event, written by the archivers
(`streams.archive`) and read by training (`recsys train --source archive`) and by anyone with
DuckDB, Polars or Spark.

Layout: partitioned by `event_date` (the event's UTC day, "YYYY-MM-DD") and `event_type`, so a
training window reads only its days; one row per distinct event (`ARCHIVE_SCHEMA`), with the
Kafka topic, partition and offset it was read from. An impression (event type "impression") is
one row per item shown, all with the impression's `recommendation_id` as `event_id`, the item's
`position` and `source`, and the request's parameters as `context`. Columns added since a table
was created are merged into its schema at the next write (older rows read them as null).

Exactly once: each commit carries a Delta application transaction per Kafka topic partition it
covers (`app_id`: "recsys-archive:<topic>:<partition>", version: the last offset in the commit),
in the same atomic commit as the rows. An archiver that starts, or takes a partition over,
resumes after the offset the table records, whatever Kafka's committed offsets say, so a crash
between writing and committing to Kafka adds no row twice and loses none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from core.settings import Settings

APP_PREFIX = "recsys-archive"
PARTITION_COLUMNS = ("event_date", "event_type")
ARCHIVE_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_date", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),  # as the event has it
        pa.field("session_id", pa.string()),
        pa.field("context", pa.string()),  # JSON object, null when empty
        pa.field("dwell_ms", pa.int64()),
        pa.field("quantity", pa.int32()),
        pa.field("price", pa.float64()),
        # Attribution: the answer a click, purchase or negative event came from; for an
        # impression (one row per shown item) its id, and the item's place in the answer.
        pa.field("recommendation_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("published_at", pa.timestamp("ms", tz="UTC"), nullable=False),  # Kafka's
        pa.field("archived_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
# What training reads (`read_interactions`).
INTERACTION_COLUMNS = ("user_id", "item_id", "ts", "event_type")


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id of one Kafka topic partition."""
    return f"{APP_PREFIX}:{topic}:{partition}"


def event_date(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d")


class ArchiveError(RuntimeError):
    """The archive cannot be read or written where the settings say; the message says why and
    what to do."""


@dataclass(frozen=True)
class ArchiveLocation:
    uri: str
    storage_options: dict[str, str]

    @classmethod
    def of(cls, settings: Settings) -> ArchiveLocation:
        return cls(settings.archive_location, dict(settings.archive_storage_options))


# The event types training reads from the archive: the positive interactions. Other types
# (negative feedback, impressions) are archived too, but are not interactions to learn
# preferences from; readers prune their partitions (`event_type` is a partition column).
TRAINING_EVENT_TYPES = ("view", "click", "purchase")
# How readers order rows: event time, then the Kafka position for ties (deterministic).
ROW_ORDER = ("ts", "topic", "partition", "offset")
