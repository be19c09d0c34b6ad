"""Kafka records of events to rows of the archive (`core.archive.ARCHIVE_SCHEMA`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa

from core.archive import ARCHIVE_SCHEMA, event_date
from schemas.codec import EventDecodeError, decode_event
from schemas.events import AnyEvent, PurchaseEvent, ViewEvent


@dataclass
class Rows:
    """Columns of the rows being gathered for one commit."""

    columns: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in ARCHIVE_SCHEMA.names}
    )

    def __len__(self) -> int:
        return len(self.columns["event_id"])

    def add(
        self, event: AnyEvent, topic: str, partition: int, offset: int, published_ms: int
    ) -> None:
        c = self.columns
        c["event_id"].append(str(event.event_id))
        c["event_type"].append(event.event_type)
        c["event_date"].append(event_date(event.ts))
        c["user_id"].append(event.user_id)
        c["item_id"].append(event.item_id)
        c["ts"].append(event.ts)
        c["session_id"].append(event.session_id)
        c["context"].append(orjson.dumps(event.context).decode() if event.context else None)
        c["dwell_ms"].append(event.dwell_ms if isinstance(event, ViewEvent) else None)
        purchase = event if isinstance(event, PurchaseEvent) else None
        c["quantity"].append(purchase.quantity if purchase else None)
        c["price"].append(purchase.price if purchase else None)
        c["topic"].append(topic)
        c["partition"].append(partition)
        c["offset"].append(offset)
        c["published_at"].append(datetime.fromtimestamp(published_ms / 1000, tz=UTC))

    def table(self) -> pa.Table:
        now = datetime.now(UTC)
        columns = {**self.columns, "archived_at": [now] * len(self)}
        return pa.table(columns, schema=ARCHIVE_SCHEMA)


def decoded(value: bytes | None) -> AnyEvent | None:
    """The event in a record's value, or None when it is not a valid one (the stream worker
    dead-letters those; the archive holds valid events only)."""
    if value is None:
        return None
    try:
        return decode_event(value)
    except EventDecodeError:
        return None
