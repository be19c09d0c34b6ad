"""What a stream job finds on the topics it reads: an interaction event, or an impression on
`IMPRESSION_TOPIC`. One decoder for both, chosen by topic."""

from __future__ import annotations

from schemas.codec import decode_event, encode_event
from schemas.events import AnyEvent
from schemas.impressions import ImpressionEvent, decode_impression, encode_impression
from schemas.topics import IMPRESSION_TOPIC

StreamRecord = AnyEvent | ImpressionEvent


def decode_record(topic: str, data: bytes) -> StreamRecord:
    """The record in a message of `topic`; raises `EventDecodeError` naming the field at fault."""
    if topic == IMPRESSION_TOPIC:
        return decode_impression(data)
    return decode_event(data)


def encode_record(record: StreamRecord) -> bytes:
    if isinstance(record, ImpressionEvent):
        return encode_impression(record)
    return encode_event(record)
