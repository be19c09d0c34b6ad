"""Event schemas and the codec: valid events round-trip; each bad event names its field."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import (
    ClickEvent,
    EventDecodeError,
    PurchaseEvent,
    ViewEvent,
    decode_event,
    encode_event,
    event_key,
    new_event,
    topic_for,
)
from schemas.codec import MAX_EVENT_BYTES, validate_event

pytestmark = pytest.mark.unit


def valid(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "click",
        "user_id": "user-1",
        "item_id": "item-9",
        "ts": "2024-05-01T12:00:00Z",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("event_type", "model", "extra"),
    [
        ("view", ViewEvent, {"dwell_ms": 1200}),
        ("click", ClickEvent, {"session_id": "s-1", "context": {"device": "ios", "pos": 3}}),
        ("purchase", PurchaseEvent, {"quantity": 2, "price": 9.5}),
    ],
)
def test_each_event_type_round_trips(event_type: str, model: type, extra: dict[str, Any]) -> None:
    event = decode_event(json.dumps(valid(event_type=event_type, **extra)).encode())
    assert isinstance(event, model)
    assert decode_event(encode_event(event)) == event
    assert event.schema_version == 1


def test_epoch_milliseconds_and_offsets_become_utc() -> None:
    from_ms = decode_event(json.dumps(valid(ts=1714564800000)).encode())
    from_offset = decode_event(json.dumps(valid(ts="2024-05-01T14:00:00+02:00")).encode())
    assert from_ms.ts == from_offset.ts == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert from_ms.ts.tzinfo is UTC


def test_new_event_and_topic_and_key() -> None:
    event = new_event("purchase", "u7", "i3", quantity=3)
    assert isinstance(event.event_id, uuid.UUID)
    assert topic_for(event.event_type) == "events.purchase"
    assert event_key(event) == b"u7"
    decoded = decode_event(encode_event(event))
    assert isinstance(decoded, PurchaseEvent)
    assert decoded.quantity == 3


def _far_future() -> str:
    return (datetime.now(UTC) + timedelta(days=2)).isoformat()


BAD_EVENTS: list[tuple[str, bytes, str]] = [
    ("missing user_id", json.dumps(valid(user_id=...)).encode(), "user_id"),
    ("missing event_type", json.dumps(valid(event_type=...)).encode(), "event_type"),
    ("wrong type for user_id", json.dumps(valid(user_id=42)).encode(), "user_id"),
    ("wrong type for ts", json.dumps(valid(ts=[2024])).encode(), "ts"),
    ("bad uuid", json.dumps(valid(event_id="not-a-uuid")).encode(), "event_id"),
    ("empty item id", json.dumps(valid(item_id="")).encode(), "item_id"),
    ("10 kB id", json.dumps(valid(user_id="u" * 10_000)).encode(), "user_id"),
    ("unprintable id", json.dumps(valid(item_id="a\nb")).encode(), "item_id"),
    ("unknown event type", json.dumps(valid(event_type="like")).encode(), "event_type"),
    ("unknown field", json.dumps(valid(rating=5)).encode(), "rating"),
    ("naive timestamp", json.dumps(valid(ts="2024-05-01T12:00:00")).encode(), "ts"),
    ("far-future timestamp", json.dumps(valid(ts=_far_future())).encode(), "ts"),
    ("negative epoch", json.dumps(valid(ts=-5)).encode(), "ts"),
    ("before 1970", json.dumps(valid(ts="1969-12-31T23:59:59Z")).encode(), "ts"),
    ("unsupported schema version", json.dumps(valid(schema_version=2)).encode(), "schema_version"),
    ("oversized context", json.dumps(valid(context={f"k{i}": i for i in range(40)})).encode(),
     "context"),
    ("negative quantity", json.dumps(valid(event_type="purchase", quantity=0)).encode(),
     "quantity"),
    ("dwell past its bound", json.dumps(valid(event_type="view", dwell_ms=2**31)).encode(),
     "dwell_ms"),
    ("dwell past 64 bits", json.dumps(valid(event_type="view", dwell_ms=10**21)).encode(),
     "dwell_ms"),
    ("non-JSON bytes", b"\x00\xffnot json", "body"),
    ("JSON that is not an object", b"[1, 2, 3]", "body"),
    ("oversized message", b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}', "body"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "data", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_events_are_rejected_naming_the_field(case: str, data: bytes, field: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(data)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_validate_event_from_parsed_json_names_field() -> None:
    with pytest.raises(EventDecodeError) as info:
        validate_event(valid(event_id="zzz"))
    assert info.value.field == "event_id"
    assert validate_event(valid()).user_id == "user-1"


def test_dwell_has_its_bound_in_the_schema() -> None:
    """The JSON parser refuses integers past 64 bits, so an unbounded integer in the schema would
    allow what the API rejects (schemathesis found `dwell_ms` so)."""
    schema = ViewEvent.model_json_schema()["properties"]["dwell_ms"]
    bounded = next(option for option in schema["anyOf"] if option.get("type") == "integer")
    assert bounded["maximum"] == 2**31 - 1
    longest = decode_event(json.dumps(valid(event_type="view", dwell_ms=2**31 - 1)).encode())
    assert isinstance(longest, ViewEvent)
    assert longest.dwell_ms == 2**31 - 1
