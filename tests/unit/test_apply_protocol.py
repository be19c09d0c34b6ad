"""Frames between a worker and its apply process, and the metric calls that cross with them."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from streams.apply_protocol import (
    HEADER,
    ProtocolError,
    Record,
    Report,
    decode_batch,
    decode_report,
    encode_batch,
    encode_report,
    read_frame,
)
from streams.metrics import JournalRecorder, PrometheusRecorder, replay

pytestmark = pytest.mark.unit


class FaustLikeMessage:
    """Faust hands headers over as a dict or as pairs; either must arrive as pairs."""

    def __init__(self, offset: int, headers: object) -> None:
        self.topic, self.partition, self.offset = "events.view", 3, offset
        self.key: bytes | None = b"user-1" if offset else None
        self.value: bytes | None = b'{"not": "decoded here"}'
        self.headers = headers


def _body(frame: bytes) -> bytes:
    (length,) = HEADER.unpack(frame[: HEADER.size])
    assert length == len(frame) - HEADER.size
    return frame[HEADER.size :]


def test_a_batch_arrives_as_consumed_bytes_and_all() -> None:
    messages = [
        FaustLikeMessage(0, None),
        FaustLikeMessage(41, {"traceparent": b"00-abc-def-01"}),
        FaustLikeMessage(42, [("traceparent", b"00-123-456-01")]),
    ]
    seq, records = decode_batch(_body(encode_batch(7, messages)))
    assert seq == 7
    assert records == [
        Record("events.view", 3, 0, None, b'{"not": "decoded here"}', []),
        Record("events.view", 3, 41, b"user-1", b'{"not": "decoded here"}',
               [("traceparent", b"00-abc-def-01")]),
        Record("events.view", 3, 42, b"user-1", b'{"not": "decoded here"}',
               [("traceparent", b"00-123-456-01")]),
    ]  # fmt: skip


def test_a_report_keeps_dead_letters_and_metric_calls() -> None:
    report = Report(3, [(None, b"letter-1"), (b"k", b"letter-2")], [["redis_error", []]])
    assert decode_report(_body(encode_report(report))) == report


async def test_frames_are_read_one_by_one_and_a_clean_end_is_none() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_report(Report(1, [], [])) + encode_report(Report(2, [], [])))
    reader.feed_eof()
    first, second = await read_frame(reader), await read_frame(reader)
    assert first is not None
    assert second is not None
    assert [decode_report(first).seq, decode_report(second).seq] == [1, 2]
    assert await read_frame(reader) is None


async def test_a_stream_cut_inside_a_frame_is_a_protocol_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_report(Report(1, [], []))[:-2])
    reader.feed_eof()
    with pytest.raises(ProtocolError):
        await read_frame(reader)


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_replayed_metric_calls_count_as_if_recorded_here() -> None:
    applied = {"event_type": "purchase", "outcome": "applied"}
    invalid = {"event_type": "unknown", "outcome": "invalid"}
    before = {
        "applied": _sample("recsys_stream_events_total", applied),
        "invalid": _sample("recsys_stream_events_total", invalid),
        "dlq": _sample("recsys_stream_dlq_total", {"field": "ts"}),
        "offset": _sample("recsys_stream_dedup_hits_total", {"reason": "offset"}),
        "batches": _sample("recsys_stream_batch_size_count"),
        "fresh": _sample("recsys_stream_freshness_seconds_count"),
        "errors": _sample("recsys_stream_redis_errors_total"),
    }
    journal = JournalRecorder()
    journal.batch(3, 0.01)
    journal.dead_letter("ts", "unknown", "invalid")
    journal.redis_error()
    journal.outcome({"purchase": 2}, 0, 1, 0, 0, [0.02, 0.03])
    entries = journal.take()
    assert journal.take() == []  # taken once

    replay(entries, PrometheusRecorder())

    assert _sample("recsys_stream_events_total", applied) - before["applied"] == 2
    assert _sample("recsys_stream_events_total", invalid) - before["invalid"] == 1
    assert _sample("recsys_stream_dlq_total", {"field": "ts"}) - before["dlq"] == 1
    assert _sample("recsys_stream_dedup_hits_total", {"reason": "offset"}) - before["offset"] == 1
    assert _sample("recsys_stream_batch_size_count") - before["batches"] == 1
    assert _sample("recsys_stream_freshness_seconds_count") - before["fresh"] == 2
    assert _sample("recsys_stream_redis_errors_total") - before["errors"] == 1


def test_replay_refuses_anything_but_recorder_calls() -> None:
    with pytest.raises(ValueError, match="not a recorder call"):
        replay([["__init__", []]], PrometheusRecorder())
