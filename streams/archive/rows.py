"""Kafka records of events and impressions to rows of the archive
(`core.archive.ARCHIVE_SCHEMA`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa

from core.archive import ARCHIVE_SCHEMA, event_date
from schemas.codec import EventDecodeError
from schemas.events import PurchaseEvent, ViewEvent
from schemas.impressions import ImpressionEvent
from schemas.records import StreamRecord, decode_record


@dataclass
class Rows:
    """Columns of the rows being gathered for one commit."""

    columns: dict[str, list[object]] = field(
        default_factory=lambda: {name: [] for name in ARCHIVE_SCHEMA.names}
    )

    def __len__(self) -> int:
        return len(self.columns["event_id"])

    def add(
        self, event: StreamRecord, topic: str, partition: int, offset: int, published_ms: int
    ) -> None:
        if isinstance(event, ImpressionEvent):
            self._add_impression(event, topic, partition, offset, published_ms)
            return
        c = self.columns
        recommendation_id = getattr(event, "recommendation_id", None)
        c["recommendation_id"].append(str(recommendation_id) if recommendation_id else None)
        c["position"].append(None)
        c["source"].append(None)
        c["model_version"].append(None)
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
        self._add_source(1, topic, partition, offset, published_ms)

    def _add_impression(
        self,
        impression: ImpressionEvent,
        topic: str,
        partition: int,
        offset: int,
        published_ms: int,
    ) -> None:
        """One row per item shown."""
        c = self.columns
        n = len(impression.items)
        recommendation_id = str(impression.recommendation_id)
        request = impression.request.model_dump() | {
            "reason": impression.reason,
            "experiment": impression.experiment,
            "variant": impression.variant,
        }
        context = orjson.dumps({k: v for k, v in request.items() if v is not None}).decode()
        date = event_date(impression.ts)
        for item in impression.items:
            c["event_id"].append(recommendation_id)
            c["item_id"].append(item.item_id)
            c["position"].append(item.position)
            c["source"].append(item.source)
        for name, value in (
            ("event_type", "impression"),
            ("event_date", date),
            ("user_id", impression.user_id),
            ("ts", impression.ts),
            ("session_id", None),
            ("context", context),
            ("dwell_ms", None),
            ("quantity", None),
            ("price", None),
            ("recommendation_id", recommendation_id),
            ("model_version", impression.model_version),
        ):
            c[name].extend([value] * n)
        self._add_source(n, topic, partition, offset, published_ms)

    def _add_source(
        self, n: int, topic: str, partition: int, offset: int, published_ms: int
    ) -> None:
        """Where the last `n` rows were read from."""
        c = self.columns
        c["topic"].extend([topic] * n)
        c["partition"].extend([partition] * n)
        c["offset"].extend([offset] * n)
        c["published_at"].extend([datetime.fromtimestamp(published_ms / 1000, tz=UTC)] * n)

    def table(self) -> pa.Table:
        now = datetime.now(UTC)
        columns = {**self.columns, "archived_at": [now] * len(self)}
        return pa.table(columns, schema=ARCHIVE_SCHEMA)


def decoded(topic: str, value: bytes | None) -> StreamRecord | None:
    """The event or impression in a record's value, or None when it is not a valid one (the
    stream worker dead-letters those; the archive holds valid events only)."""
    if value is None:
        return None
    try:
        return decode_record(topic, value)
    except EventDecodeError:
        return None
