"""The archiver's pure parts: rows built from events, and the window of recent event ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.archive import ARCHIVE_SCHEMA, app_id
from schemas.codec import encode_event
from schemas.events import new_event
from streams.archive.recent_ids import RecentIds
from streams.archive.rows import Rows, decoded

pytestmark = pytest.mark.unit


def test_rows_follow_the_archive_schema_whatever_the_event_type() -> None:
    ts = datetime(2026, 12, 3, 23, 59, 59, 999_000, tzinfo=UTC)
    rows = Rows()
    rows.add(new_event("view", "u1", "i1", ts=ts, dwell_ms=1200), "events.view", 2, 40, 1_000)
    purchase = new_event("purchase", "u1", "i2", ts=ts, quantity=3, price=9.5)
    rows.add(purchase, "events.purchase", 0, 7, 2_000)
    table = rows.table()
    assert table.schema == ARCHIVE_SCHEMA
    view_row, purchase_row = table.to_pylist()
    assert (view_row["event_date"], view_row["dwell_ms"], view_row["quantity"]) == (
        "2026-12-03", 1200, None,
    )  # fmt: skip
    assert (purchase_row["quantity"], purchase_row["price"], purchase_row["offset"]) == (3, 9.5, 7)
    assert purchase_row["ts"] == ts
    assert purchase_row["event_id"] == str(purchase.event_id)


def test_only_valid_events_are_decoded() -> None:
    event = new_event("click", "u1", "i1")
    assert decoded(encode_event(event)) == event
    assert decoded(b'{"event_type": "click"}') is None
    assert decoded(None) is None


def test_recent_ids_forget_by_age_and_by_count() -> None:
    recent = RecentIds(window_s=10, limit=3)
    recent.add(["a", "b"], now=0)
    recent.add(["c"], now=5)
    assert "a" in recent
    recent.add(["d"], now=6)  # four ids: the oldest goes
    assert "a" not in recent
    assert len(recent) == 3
    recent.add(["e"], now=15.5)  # b (at 0) and c (at 5) are older than 10 s
    assert "b" not in recent
    assert "c" not in recent
    assert {"d", "e"} <= {i for i in "abcde" if i in recent}


def test_each_topic_partition_has_its_own_transaction_id() -> None:
    assert app_id("events.view", 3) != app_id("events.view", 4)
    assert app_id("events.view", 3) != app_id("events.click", 3)
