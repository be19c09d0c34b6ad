"""Typed boundaries: events on Kafka and the bodies of the API."""

from schemas.codec import EventDecodeError, FieldError, decode_event, encode_event, event_key
from schemas.events import (
    EVENT_TYPES,
    AnyEvent,
    ClickEvent,
    Event,
    EventType,
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
    "AnyEvent",
    "ClickEvent",
    "Event",
    "EventDecodeError",
    "EventType",
    "FieldError",
    "PurchaseEvent",
    "ViewEvent",
    "decode_event",
    "encode_event",
    "event_key",
    "new_event",
    "topic_for",
]
