"""Typed boundaries: events on Kafka and the bodies of the API."""

from schemas.codec import EventDecodeError, FieldError, decode_event, encode_event, event_key
from schemas.events import (
    EVENT_TYPES,
    NEGATIVE_EVENT_TYPES,
    POSITIVE_EVENT_TYPES,
    AnyEvent,
    ClickEvent,
    DislikeEvent,
    Event,
    EventType,
    HideEvent,
    PurchaseEvent,
    ViewEvent,
    new_event,
)
from schemas.topics import ALL_TOPICS, DLQ_TOPIC, EVENT_TOPICS, topic_for

__all__ = [
    "ALL_TOPICS",
    "DLQ_TOPIC",
    "EVENT_TOPICS",
    "EVENT_TYPES",
    "NEGATIVE_EVENT_TYPES",
    "POSITIVE_EVENT_TYPES",
    "AnyEvent",
    "ClickEvent",
    "DislikeEvent",
    "Event",
    "EventDecodeError",
    "EventType",
    "FieldError",
    "HideEvent",
    "PurchaseEvent",
    "ViewEvent",
    "decode_event",
    "encode_event",
    "event_key",
    "new_event",
    "topic_for",
]
