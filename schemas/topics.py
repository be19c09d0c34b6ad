"""Kafka topic names, in one place. Event topics are keyed by user id."""

from __future__ import annotations

from typing import Final

from schemas.events import EVENT_TYPES, EventType

TOPIC_BY_EVENT_TYPE: Final[dict[EventType, str]] = {t: f"events.{t}" for t in EVENT_TYPES}
EVENT_TOPICS: Final[tuple[str, ...]] = tuple(TOPIC_BY_EVENT_TYPE.values())
DLQ_TOPIC: Final = "events.dlq"
# What the API showed (`schemas.impressions`), keyed by user id like the events.
IMPRESSION_TOPIC: Final = "events.impression"
ALL_TOPICS: Final[tuple[str, ...]] = (*EVENT_TOPICS, IMPRESSION_TOPIC, DLQ_TOPIC)


def topic_for(event_type: EventType) -> str:
    return TOPIC_BY_EVENT_TYPE[event_type]
