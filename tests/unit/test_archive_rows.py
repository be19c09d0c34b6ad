"""The archiver's pure parts: rows built from events, and the window of recent event ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from core.archive import ARCHIVE_SCHEMA, app_id
from schemas.codec import encode_event
from schemas.events import new_event
from schemas.impressions import (
    ImpressedItem,
    ImpressionEvent,
    ImpressionRequest,
    encode_impression,
)
from schemas.topics import IMPRESSION_TOPIC
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
    assert decoded("events.click", encode_event(event)) == event
    assert decoded("events.click", b'{"event_type": "click"}') is None
    assert decoded("events.click", None) is None
    impression = _impression()
    assert decoded(IMPRESSION_TOPIC, encode_impression(impression)) == impression
    # An event on the impression topic is not an impression.
    assert decoded(IMPRESSION_TOPIC, encode_event(event)) is None


def _impression(items: tuple[str, ...] = ("i7", "i3")) -> ImpressionEvent:
    return ImpressionEvent(
        recommendation_id=uuid.uuid4(),
        user_id="u1",
        ts=datetime(2026, 12, 4, 10, 0, tzinfo=UTC),
        model_version="v1",
        source="personalized",
        reason="trending_short",
        items=[
            ImpressedItem(item_id=item, position=n, source="personalized", score=1.0 - n / 10)
            for n, item in enumerate(items)
        ],
        request=ImpressionRequest(k=2, diversity=0.8, genres=["Drama"]),
    )


def test_an_impression_is_one_row_per_item_shown_with_its_position() -> None:
    impression = _impression()
    rows = Rows()
    rows.add(impression, IMPRESSION_TOPIC, 1, 99, 3_000)
    click = new_event("click", "u1", "i3", recommendation_id=impression.recommendation_id)
    rows.add(click, "events.click", 0, 5, 4_000)
    table = rows.table()
    assert table.schema == ARCHIVE_SCHEMA
    first, second, clicked = table.to_pylist()
    assert [first["item_id"], second["item_id"]] == ["i7", "i3"]
    assert [first["position"], second["position"]] == [0, 1]
    assert {first["event_type"], second["event_type"]} == {"impression"}
    assert first["event_id"] == second["event_id"] == str(impression.recommendation_id)
    assert (second["offset"], second["model_version"], second["source"]) == (
        99, "v1", "personalized",
    )  # fmt: skip
    assert orjson.loads(first["context"])["genres"] == ["Drama"]
    assert orjson.loads(first["context"])["reason"] == "trending_short"
    # Attribution: the click names the answer it came from, and joins its impression row.
    assert clicked["recommendation_id"] == second["recommendation_id"]
    assert clicked["position"] is None


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
