"""Frames between a worker process and its apply process (`streams.apply_child`).

Each frame is a 4-byte big-endian length and a MessagePack body:

- worker -> apply process, one batch: `[seq, [[topic, partition, offset, key, value,
  [[header, value], ...]], ...]]`, the Kafka messages as consumed, undecoded;
- apply process -> worker, one report per batch, in the same order: `[seq, [[key, dead
  letter], ...], recorder calls]`: the dead letters for the worker to deliver and the metric
  calls for it to replay (`streams.metrics.JournalRecorder`).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from streams.processor import RawMessage, header_pairs

HEADER = struct.Struct(">I")


class ProtocolError(RuntimeError):
    """The other side sent something that is not the next frame it owes."""


@dataclass(slots=True)
class Record:
    """A consumed Kafka message as the apply process sees it (a `RawMessage`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    seq: int
    dead_letters: list[tuple[bytes | None, bytes]]
    recorded: list[Any]


def _frame(body: Any) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(packed)) + packed


def encode_batch(seq: int, messages: Sequence[RawMessage]) -> bytes:
    rows = [
        [m.topic, m.partition, m.offset, m.key, m.value, header_pairs(m.headers)] for m in messages
    ]
    return _frame([seq, rows])


def decode_batch(body: bytes) -> tuple[int, list[Record]]:
    seq, rows = msgpack.unpackb(body, raw=False)
    records = [
        Record(topic, partition, offset, key, value, [(k, v) for k, v in headers])
        for topic, partition, offset, key, value, headers in rows
    ]
    return seq, records


def encode_report(report: Report) -> bytes:
    return _frame([report.seq, [list(d) for d in report.dead_letters], report.recorded])


def decode_report(body: bytes) -> Report:
    seq, dead_letters, recorded = msgpack.unpackb(body, raw=False)
    return Report(seq, [(key, value) for key, value in dead_letters], recorded)


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's body, or None when the other side has closed the stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("stream closed inside a frame header") from None
        return None
    try:
        return await reader.readexactly(HEADER.unpack(head)[0])
    except asyncio.IncompleteReadError:
        raise ProtocolError("stream closed inside a frame") from None
