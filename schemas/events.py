"""Interaction events: the contract between producers, the stream agents and the API.

Every event names its `event_type` (the discriminator) and its `schema_version`; `event_id` is
the idempotency key the stream side de-duplicates on, so producers must set it once per real
event and keep it across retries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
MAX_ID_LENGTH = 128
MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_KEY_LENGTH = 64
MAX_CONTEXT_VALUE_LENGTH = 256
# Producers' clocks drift; anything further ahead than this is a bug, not skew.
MAX_FUTURE_SKEW = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EventType = Literal["view", "click", "purchase", "dislike", "hide"]
# What the user engaged with: these pull the user towards the item and are what training reads.
POSITIVE_EVENT_TYPES: tuple[EventType, ...] = ("view", "click", "purchase")
# Explicit negative feedback: the user's vector moves away from the item and the item is left
# out of their answers for a while (`Settings.feedback_exclude_s`).
NEGATIVE_EVENT_TYPES: tuple[EventType, ...] = ("dislike", "hide")
EVENT_TYPES: tuple[EventType, ...] = POSITIVE_EVENT_TYPES + NEGATIVE_EVENT_TYPES


def stream_event_type(kind: str) -> EventType:
    """A dataset row's type as a stream event: view, click and purchase stay what they are;
    anything else (a MovieLens rating) is a purchase, since the user consumed the item."""
    for event_type in POSITIVE_EVENT_TYPES:
        if kind == event_type:
            return event_type
    return "purchase"


ContextValue = StrictStr | bool | int | float


def _check_id(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable() or value.isspace():
        raise ValueError("must contain printable characters only")
    return value


def parse_timestamp(value: Any) -> datetime:
    """Accept ISO 8601 with an offset, or epoch milliseconds; return an aware UTC datetime."""
    if isinstance(value, bool):
        raise ValueError("expected an ISO 8601 string or epoch milliseconds, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("epoch milliseconds must not be negative")
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("epoch milliseconds out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}") from exc
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError("expected an ISO 8601 string or epoch milliseconds")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (e.g. a trailing Z or +00:00)")
    if parsed < EPOCH:
        raise ValueError("must not be before 1970-01-01T00:00:00Z")
    return parsed.astimezone(UTC)


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    event_id: uuid.UUID = Field(description="Idempotency key: one per real-world event.")
    user_id: StrictStr = Field(
        min_length=1, max_length=MAX_ID_LENGTH, description="The dataset's own user id."
    )
    item_id: StrictStr = Field(
        min_length=1, max_length=MAX_ID_LENGTH, description="The dataset's own item id."
    )
    ts: datetime = Field(description="When it happened: ISO 8601 with offset, or epoch ms.")
    schema_version: int = Field(
        SCHEMA_VERSION, ge=1, le=max(SUPPORTED_SCHEMA_VERSIONS), description="Schema version."
    )
    session_id: StrictStr | None = Field(
        None, min_length=1, max_length=MAX_ID_LENGTH, description="Optional client session id."
    )
    context: dict[StrictStr, ContextValue] = Field(
        default_factory=dict, description="Small free-form map (device, page, ...)."
    )

    @field_validator("user_id", "item_id", "session_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else _check_id(value)

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> datetime:
        parsed = parse_timestamp(value)
        if parsed > datetime.now(UTC) + MAX_FUTURE_SKEW:
            raise ValueError(f"is more than {MAX_FUTURE_SKEW} in the future")
        return parsed

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, bool) or value not in SUPPORTED_SCHEMA_VERSIONS:
            raise ValueError(f"unsupported schema version {value!r}; supported: 1")
        return value

    @field_validator("context")
    @classmethod
    def _context(cls, value: dict[str, ContextValue]) -> dict[str, ContextValue]:
        if len(value) > MAX_CONTEXT_ENTRIES:
            raise ValueError(f"at most {MAX_CONTEXT_ENTRIES} entries")
        for key, item in value.items():
            if not key or len(key) > MAX_CONTEXT_KEY_LENGTH:
                raise ValueError(f"keys must have 1 to {MAX_CONTEXT_KEY_LENGTH} characters")
            if isinstance(item, str) and len(item) > MAX_CONTEXT_VALUE_LENGTH:
                raise ValueError(
                    f"value of {key!r} longer than {MAX_CONTEXT_VALUE_LENGTH} characters"
                )
        return value


class ViewEvent(_EventBase):
    """The user saw the item (an impression or a detail page)."""

    event_type: Literal["view"] = "view"
    dwell_ms: int | None = Field(None, ge=0, description="Time spent on the item, if known.")


class _AttributedEvent(_EventBase):
    recommendation_id: uuid.UUID | None = Field(
        None,
        description="The `recommendation_id` of the /recommend answer the user acted on, if any "
        "(attribution: joins the event to its impression).",
    )


class ClickEvent(_AttributedEvent):
    """The user clicked the item."""

    event_type: Literal["click"] = "click"


class PurchaseEvent(_AttributedEvent):
    """The user bought the item."""

    event_type: Literal["purchase"] = "purchase"
    quantity: int = Field(1, ge=1, le=10_000)
    price: float | None = Field(None, ge=0)


class DislikeEvent(_AttributedEvent):
    """The user said they do not want the item (thumbs down): negative feedback."""

    event_type: Literal["dislike"] = "dislike"


class HideEvent(_AttributedEvent):
    """The user hid the item from a list: milder negative feedback than a dislike."""

    event_type: Literal["hide"] = "hide"


AnyEvent = ViewEvent | ClickEvent | PurchaseEvent | DislikeEvent | HideEvent
Event = Annotated[AnyEvent, Field(discriminator="event_type")]
EVENT_MODELS: dict[str, type[_EventBase]] = {
    "view": ViewEvent,
    "click": ClickEvent,
    "purchase": PurchaseEvent,
    "dislike": DislikeEvent,
    "hide": HideEvent,
}


def new_event(
    event_type: EventType,
    user_id: str,
    item_id: str,
    ts: datetime | None = None,
    **fields: Any,
) -> AnyEvent:
    """Build an event with a fresh id, for producers that create events themselves."""
    model = EVENT_MODELS[event_type]
    event = model(
        event_id=uuid.uuid4(),
        user_id=user_id,
        item_id=item_id,
        ts=ts or datetime.now(UTC),
        **fields,
    )
    assert isinstance(event, ViewEvent | ClickEvent | PurchaseEvent | DislikeEvent | HideEvent)
    return event
