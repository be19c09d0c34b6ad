"""The one JSON codec for events: producers, stream agents and the API all go through it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.events import EVENT_TYPES, AnyEvent, Event, EventType

# A well-formed event is a few hundred bytes; this bound keeps a hostile payload from costing
# a worker memory or time while leaving room for a full `context` map.
MAX_EVENT_BYTES = 16 * 1024

_EVENT_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(Event)
_UNION_BRANCHES = frozenset({"str", "bool", "int", "float"})


@dataclass(frozen=True)
class FieldError:
    """One problem with an event: the field at fault (dotted path, or "body") and why."""

    field: str
    reason: str


class EventDecodeError(ValueError):
    """Raised when bytes are not a valid event; `errors` names each field at fault."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))

    @property
    def field(self) -> str:
        """The first field at fault, the one a caller should fix first."""
        return self.errors[0].field


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into (field, reason) pairs with plain field paths."""
    result = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        # A discriminated union puts the chosen model's tag in the path ("click.user_id");
        # callers think in the event's own fields, so drop it.
        if loc and loc[0] in EVENT_TYPES:
            loc = loc[1:]
        # Likewise a union of value types (a `context` value) reports each branch it tried.
        if len(loc) > 1 and loc[-1] in _UNION_BRANCHES:
            loc = loc[:-1]
            error = {**error, "msg": "must be a string, number or boolean"}
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["event_type"]
            reason = f"must be one of {', '.join(EVENT_TYPES)}" + (
                ""
                if error["type"] == "union_tag_not_found"
                else f", got {error.get('ctx', {}).get('tag')!r}"
            )
        found = FieldError(".".join(loc) or "body", reason)
        if found not in result:
            result.append(found)
    return result


def encode_event(event: AnyEvent) -> bytes:
    """Serialize an event to compact JSON bytes (timestamps as ISO 8601 UTC)."""
    data: bytes = event.model_dump_json(exclude_none=True).encode()
    return data


def decode_event(data: bytes) -> AnyEvent:
    """Parse and validate bytes into an event; raise `EventDecodeError` naming the field."""
    if len(data) > MAX_EVENT_BYTES:
        raise EventDecodeError(
            [FieldError("body", f"event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}")]
        )
    try:
        return _EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        raise EventDecodeError(field_errors(exc)) from None


def validate_event(obj: dict[str, Any]) -> AnyEvent:
    """Validate an already-parsed JSON object (as the API receives it)."""
    try:
        return _EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise EventDecodeError(field_errors(exc)) from None


def event_key(event: AnyEvent) -> bytes:
    """The Kafka message key: events are partitioned by user, so one user's events stay ordered."""
    key: bytes = event.user_id.encode()
    return key


__all__ = [
    "MAX_EVENT_BYTES",
    "AnyEvent",
    "EventDecodeError",
    "EventType",
    "FieldError",
    "decode_event",
    "encode_event",
    "event_key",
    "field_errors",
    "validate_event",
]
