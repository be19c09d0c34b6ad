"""Interaction events: the contract between producers, the stream agents and the API.

Every event names its `event_type` (the discriminator) and its `schema_version`; `event_id` is
the idempotency key the stream side de-duplicates on, so producers must set it once per real
event and keep it across retries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, field_validator

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


def _json_number(value: Any) -> Any:
    """A JSON number only: pydantic's lax mode would also read "5" or true as a number, which
    the schema (and so a generated client) does not allow. Integral floats still pass (1.0 is
    a JSON Schema integer)."""
    if value is not None and type(value) not in (int, float):
        raise ValueError("must be a number")
    return value


JsonNumber = BeforeValidator(_json_number)
MAX_DWELL_MS = 2**31 - 1


def check_id(value: str) -> str:
    """The rule every id follows (user, item and session ids; the API's path ids too)."""
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable() or value.isspace():
        raise ValueError("must contain printable characters only")
    return value


ID_RULE = (
    f"1 to {MAX_ID_LENGTH} characters, all printable (Python's str.isprintable: no control, "
    "format, private-use, surrogate or unassigned code points and no separator but the space), "
    "not only spaces."
)


@cache
def id_pattern() -> str:
    """`check_id`'s character rule as a JSON Schema (ECMA-262) pattern, built from this
    Python's own Unicode database so that the two agree exactly: only printable characters,
    at least one of them not a space. Built on first use (about 0.2 s), by the API's OpenAPI
    document; validation itself never uses it."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if chr(code).isprintable():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))

    def spell(code: int) -> str:
        # ASCII as escapes (no class syntax character to worry about), the rest literally: the
        # one spelling Python's `re`, ECMA-262 and Rust's regex all read the same way.
        return f"\\x{code:02x}" if code < 0x80 else chr(code)

    def char_class(spans: list[tuple[int, int]]) -> str:
        return (
            "[" + "".join(spell(a) if a == b else f"{spell(a)}-{spell(b)}" for a, b in spans) + "]"
        )

    space = ord(" ")
    not_space = [(a + 1 if a == space else a, b) for a, b in ranges if (a, b) != (space, space)]
    printable = char_class(ranges)
    return f"^{printable}*{char_class(not_space)}{printable}*$"


def _id_schema(schema: dict[str, Any]) -> None:
    """Adds `check_id`'s character rule to an id field's schema (lengths are pydantic's)."""
    target = next((s for s in schema.get("anyOf", ()) if s.get("type") == "string"), schema)
    target["pattern"] = id_pattern()


def _ts_schema(schema: dict[str, Any]) -> None:
    """`parse_timestamp`'s inputs: pydantic would say a date-time string only."""
    schema.pop("type", None)
    schema.pop("format", None)
    schema["anyOf"] = [
        {"type": "string", "format": "date-time"},
        {"type": "number", "minimum": 0},
    ]


def _context_schema(schema: dict[str, Any]) -> None:
    """The limits `_EventBase._context` enforces, which pydantic cannot see."""
    schema["maxProperties"] = MAX_CONTEXT_ENTRIES
    schema["propertyNames"] = {"minLength": 1, "maxLength": MAX_CONTEXT_KEY_LENGTH}
    schema["additionalProperties"] = {
        "anyOf": [
            {"type": "string", "maxLength": MAX_CONTEXT_VALUE_LENGTH},
            {"type": "boolean"},
            {"type": "number"},
        ]
    }


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
    try:
        if parsed < EPOCH:
            raise ValueError("must not be before 1970-01-01T00:00:00Z")
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59, past datetime.max in UTC
        raise ValueError("timestamp out of range") from None


def _require_event_type(schema: dict[str, Any]) -> None:
    """The discriminator is required on the wire (its default is for `new_event` and tests)."""
    schema["required"] = [*schema.get("required", ()), "event_type"]


class _EventBase(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
        json_schema_extra=_require_event_type,
    )

    event_id: uuid.UUID = Field(description="Idempotency key: one per real-world event.")
    user_id: StrictStr = Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description=f"The dataset's own user id: {ID_RULE}",
        json_schema_extra=_id_schema,
    )
    item_id: StrictStr = Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description=f"The dataset's own item id: {ID_RULE}",
        json_schema_extra=_id_schema,
    )
    ts: datetime = Field(
        description="When it happened: an ISO 8601 date-time with an offset (RFC 3339, "
        "e.g. 2024-05-01T12:00:00Z, is always read; Python's datetime.fromisoformat decides "
        "the rest), or epoch milliseconds. Not before 1970-01-01T00:00:00Z and not more than "
        f"{MAX_FUTURE_SKEW.seconds // 3600} hour after the server's clock.",
        json_schema_extra=_ts_schema,
    )
    schema_version: int = Field(
        SCHEMA_VERSION, ge=1, le=max(SUPPORTED_SCHEMA_VERSIONS), description="Schema version."
    )
    session_id: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description=f"Optional client session id: {ID_RULE}",
        json_schema_extra=_id_schema,
    )
    context: dict[StrictStr, ContextValue] = Field(
        default_factory=dict,
        description=f"Small free-form map (device, page, ...): at most {MAX_CONTEXT_ENTRIES} "
        f"entries, keys of 1 to {MAX_CONTEXT_KEY_LENGTH} characters, string values of at most "
        f"{MAX_CONTEXT_VALUE_LENGTH}.",
        json_schema_extra=_context_schema,
    )

    @field_validator("user_id", "item_id", "session_id")
    @classmethod
    def _ids(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value)

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
        # An object or array is unhashable: `in` would raise TypeError, which pydantic does
        # not turn into a validation error.
        if type(value) not in (int, float) or value not in SUPPORTED_SCHEMA_VERSIONS:
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
    # Bounded: the JSON parser refuses integers past 64 bits, which the schema must then say
    # (schemathesis sent 1096562007204510433280 and got 422 for a schema-valid event).
    dwell_ms: Annotated[int | None, JsonNumber] = Field(
        None,
        ge=0,
        le=MAX_DWELL_MS,
        description="Time spent on the item in milliseconds, if known (at most about 24.8 days).",
    )


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
    quantity: Annotated[int, JsonNumber] = Field(1, ge=1, le=10_000)
    price: Annotated[float | None, JsonNumber] = Field(None, ge=0)


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
