"""The Faust agent and the event processor, without a broker (agent.test_context())."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.settings import Settings
from core.tracing import headers_with_context
from schemas import encode_event, new_event
from schemas.dead_letter import DeadLetter
from streams.app import create_app
from streams.applier import BatchOutcome, SourcedEvent, UpdateConfig
from streams.processor import EventProcessor, RawMessage

pytestmark = pytest.mark.unit


class RecordingProcessor:
    def __init__(self) -> None:
        self.batches: list[list[bytes | None]] = []

    async def submit(self, messages: Sequence[RawMessage]) -> Awaitable[None]:
        self.batches.append([m.value for m in messages])
        return asyncio.sleep(0)


async def test_agent_hands_batches_of_raw_messages_to_the_processor_in_order() -> None:
    recorder = RecordingProcessor()
    app = create_app(Settings(stream_batch_size=4, stream_batch_wait_ms=20), processor=recorder)
    agent = next(iter(app.agents.values()))
    async with agent.test_context() as ctx:
        for n in range(6):
            await asyncio.wait_for(ctx.put(key=b"u", value=f"m{n}".encode()), 5)
        await asyncio.sleep(0.2)
    flat = [value for batch in recorder.batches for value in batch]
    assert flat == [f"m{n}".encode() for n in range(6)]
    assert max(len(batch) for batch in recorder.batches) <= 4  # the batch size is respected


class FakeApplier:
    def __init__(self) -> None:
        self.applied: list[SourcedEvent] = []
        self.failures_left = 0
        self.poison_items: set[str] = set()

    async def apply(self, batch: Sequence[SourcedEvent], model: Any) -> BatchOutcome:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("redis is down")
        if any(getattr(s.event, "item_id", None) in self.poison_items for s in batch):
            raise ValueError("cannot apply this one")
        self.applied.extend(batch)
        outcome = BatchOutcome()
        for sourced in batch:
            outcome.applied[sourced.event.event_type] += 1
        return outcome


class NoModel:
    async def get(self) -> None:
        return None


class Message:
    def __init__(self, value: bytes, offset: int, topic: str = "events.click") -> None:
        self.topic, self.partition, self.offset = topic, 2, offset
        self.key: bytes | None = b"k"
        self.value: bytes | None = value
        self.headers: list[tuple[str, bytes]] = []


def processor_with_fakes() -> tuple[EventProcessor, FakeApplier, list[bytes]]:
    dead: list[bytes] = []

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        dead.append(value)

    # A client object connects lazily, and the fakes below mean it is never used.
    unused_redis = aioredis.Redis(host="127.0.0.1", port=1)
    processor = EventProcessor(
        unused_redis, UpdateConfig.from_settings(Settings()), send_dead_letter
    )
    applier = FakeApplier()
    processor.applier = applier  # type: ignore[assignment]
    processor.models = NoModel()  # type: ignore[assignment]
    return processor, applier, dead


async def test_invalid_messages_are_dead_lettered_and_valid_ones_applied() -> None:
    processor, applier, dead = processor_with_fakes()
    good = new_event("click", "u1", "i1")
    messages = [
        Message(b"{oops", 7),
        Message(encode_event(good), 8),
        Message(b'{"event_type": 1}', 9),
    ]
    outcome = await processor.process(messages)
    assert [s.event for s in applier.applied] == [good]
    assert applier.applied[0].offset == 8
    assert outcome.applied == {"click": 1}
    letters = [DeadLetter.model_validate_json(d) for d in dead]
    assert [(letter.source_offset, letter.field) for letter in letters] == [
        (7, "body"),
        (9, "event_type"),
    ]
    assert letters[0].original == b"{oops"
    assert letters[0].source_topic == "events.click"
    assert json.loads(dead[1])["source_partition"] == 2


async def test_processing_waits_out_a_redis_outage_instead_of_returning() -> None:
    processor, applier, _ = processor_with_fakes()
    applier.failures_left = 3
    outcome = await processor.process([Message(encode_event(new_event("view", "u", "i")), 1)])
    assert outcome.applied == {"view": 1}
    assert len(applier.applied) == 1


async def test_trace_context_from_kafka_headers_is_continued_in_the_worker_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the processor's tracer is a proxy to the global one
    producer_tracer = provider.get_tracer("test-producer")
    with producer_tracer.start_as_current_span("POST /events") as upstream:
        headers = headers_with_context()
    processor, _, _ = processor_with_fakes()
    traced = Message(encode_event(new_event("click", "u", "i")), 3)
    traced.headers = headers
    untraced = Message(encode_event(new_event("view", "u2", "i")), 4)
    await processor.process([traced, untraced])

    spans = exporter.get_finished_spans()
    trace_id = upstream.get_span_context().trace_id
    process_spans = [s for s in spans if s.name == "events.click process"]
    assert len(process_spans) == 1  # one per traced event; none for the untraced one
    assert process_spans[0].context.trace_id == trace_id
    assert process_spans[0].parent is not None
    assert process_spans[0].parent.span_id == upstream.get_span_context().span_id
    redis_spans = [s for s in spans if s.name == "redis apply_batch"]
    assert redis_spans[0].context.trace_id == trace_id


async def test_an_event_that_cannot_be_applied_is_dead_lettered_and_the_rest_applied() -> None:
    processor, applier, dead = processor_with_fakes()
    applier.poison_items = {"bad-item"}
    good, bad = new_event("view", "u", "ok-item"), new_event("click", "u", "bad-item")
    outcome = await processor.process(
        [Message(encode_event(good), 1), Message(encode_event(bad), 2)]
    )
    assert [s.event for s in applier.applied] == [good]
    assert outcome.applied == {"view": 1}
    letter = DeadLetter.model_validate_json(dead[0])
    assert letter.source_offset == 2
    assert "cannot apply this one" in letter.error
