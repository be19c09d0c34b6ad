"""One batch of Kafka messages: decode, dead-letter the invalid, apply the valid, record metrics.

`process` returns only once every message of the batch is dealt with: invalid ones delivered to
the dead-letter topic, valid ones applied in Redis. While Redis is unreachable it retries with
backoff instead of returning, so the caller never acknowledges (and Kafka never commits) an
event whose effect is not in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind

from core.clients import RedisClient, redis_unavailable
from core.tracing import context_from_headers
from schemas import EventDecodeError
from schemas.dead_letter import DeadLetter
from schemas.records import decode_record, encode_record
from streams import metrics
from streams.applier import BatchApplier, BatchOutcome, SourcedEvent, UpdateConfig
from streams.drift import WorkerDrift
from streams.model_cache import ModelCache

log = logging.getLogger(__name__)
tracer = trace.get_tracer("recsys.streams")

MAX_BACKOFF_S = 2.0

DeadLetterSender = Callable[[bytes | None, bytes], Awaitable[None]]


class RawMessage(Protocol):
    """What the processor needs of a consumed Kafka message (Faust's Message has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


@dataclass
class DecodedBatch:
    """The valid events of a batch, in order, with each one's consumer span (None where the
    message carried no trace context)."""

    events: list[SourcedEvent] = field(default_factory=list)
    spans: list[trace.Span | None] = field(default_factory=list)

    def split(self, parts: int) -> list[DecodedBatch]:
        """`parts` batches by partition number, each keeping its events' order. Events are keyed
        by user, so a user's events all fall in one part: the parts touch disjoint users and
        disjoint partitions, and can be applied concurrently without conflicts."""
        split = [DecodedBatch() for _ in range(parts)]
        for event, span in zip(self.events, self.spans, strict=True):
            part = split[event.partition % parts]
            part.events.append(event)
            part.spans.append(span)
        return split


class EventProcessor:
    def __init__(
        self,
        redis: RedisClient,
        config: UpdateConfig,
        send_dead_letter: DeadLetterSender,
        *,
        model_refresh_s: float = 5.0,
        recorder: metrics.PrometheusRecorder | metrics.JournalRecorder | None = None,
        drift: WorkerDrift | None = None,
    ) -> None:
        self.applier = BatchApplier(redis, config)
        self.models = ModelCache(redis, refresh_s=model_refresh_s)
        self.send_dead_letter = send_dead_letter
        self.recorder = recorder or metrics.PrometheusRecorder()
        # Live drift histograms (`streams.drift`); None: not monitored (the apply process
        # passes the worker's, built from its settings).
        self.drift = drift

    async def process(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Deal with a whole batch: decode, dead-letter the invalid, apply the valid."""
        started = time.perf_counter()
        outcome = await self.apply(await self.decode(messages))
        self.recorder.batch(len(messages), time.perf_counter() - started)
        return outcome

    async def decode(self, messages: Sequence[RawMessage]) -> DecodedBatch:
        """The valid events of `messages`, each with its consumer span; the invalid ones are
        delivered to the dead-letter topic before this returns."""
        decoded = DecodedBatch()
        for message in messages:
            try:
                event = decode_record(message.topic, message.value or b"")
            except EventDecodeError as exc:
                await self._dead_letter(message, exc)
                continue
            decoded.events.append(
                SourcedEvent(event, message.topic, message.partition, message.offset)
            )
            parent = context_from_headers(header_pairs(message.headers))
            decoded.spans.append(
                None if parent is None else _event_span(message, event.event_type, parent)
            )
        return decoded

    async def apply(self, decoded: DecodedBatch) -> BatchOutcome:
        """Apply decoded events in Redis (retrying while it is unreachable); record the outcome
        and end the events' spans."""
        spans = [span for span in decoded.spans if span is not None]
        outcome = await self._apply_until_done(decoded.events, spans)
        self._record(outcome)
        if self.drift is not None:
            await self.drift.observe(decoded.events, self.models, outcome.event_scores)
        for span in spans:
            span.end()
        return outcome

    async def _dead_letter(self, message: RawMessage, exc: EventDecodeError) -> None:
        letter = DeadLetter.for_message(
            message.value or b"", str(exc), exc.field, message.topic, message.partition,
            message.offset,
        )  # fmt: skip
        await self.send_dead_letter(message.key, letter.model_dump_json().encode())
        self.recorder.dead_letter(exc.field, "unknown", "invalid")

    async def _apply_until_done(
        self, valid: list[SourcedEvent], spans: list[trace.Span]
    ) -> BatchOutcome:
        if not valid:
            return BatchOutcome()
        try:
            return await self._apply_with_retries(valid, spans)
        except Exception:
            log.exception("applying a batch of %d events failed; isolating the cause", len(valid))
        # A valid event that still cannot be applied (a bug, not an outage) must neither stop
        # the worker (nor, raised again, its every restart) nor hold up the others: apply one by
        # one and dead-letter the culprits.
        total = BatchOutcome()
        for sourced in valid:
            try:
                outcome = await self._apply_with_retries([sourced], [])
            except Exception as exc:
                await self._dead_letter_event(sourced, exc)
                continue
            total.applied.update(outcome.applied)
            total.duplicates += outcome.duplicates
            total.redelivered += outcome.redelivered
            total.unknown_items += outcome.unknown_items
            total.freshness_s += outcome.freshness_s
            total.credited.update(outcome.credited)
        return total

    async def _dead_letter_event(self, sourced: SourcedEvent, exc: Exception) -> None:
        original = encode_record(sourced.event)
        letter = DeadLetter.for_message(
            original, f"processing failed: {exc!r}", "body", sourced.topic, sourced.partition,
            sourced.offset,
        )  # fmt: skip
        await self.send_dead_letter(
            sourced.event.user_id.encode(), letter.model_dump_json().encode()
        )
        self.recorder.dead_letter("processing", sourced.event.event_type, "failed")

    async def _apply_with_retries(
        self, valid: list[SourcedEvent], spans: list[trace.Span]
    ) -> BatchOutcome:
        links = [Link(s.get_span_context()) for s in spans[1:]]
        parent = trace.set_span_in_context(spans[0]) if spans else None
        attempt = 0
        while True:
            try:
                with tracer.start_as_current_span(
                    "redis apply_batch", context=parent, links=links,
                    attributes={"db.system": "redis", "recsys.batch.events": len(valid)},
                ):  # fmt: skip
                    redis_started = time.perf_counter()
                    model = await self.models.get()
                    outcome = await self.applier.apply(valid, model)
                    self.recorder.redis_apply(time.perf_counter() - redis_started)
                    return outcome
            except Exception as exc:
                if not redis_unavailable(exc):
                    raise
                attempt += 1
                self.recorder.redis_error()
                delay = min(MAX_BACKOFF_S, 0.05 * 2**attempt)
                log.warning(
                    "Redis unavailable (%s); retrying %d events in %.2f s (attempt %d)",
                    exc, len(valid), delay, attempt,
                )  # fmt: skip
                await asyncio.sleep(delay)

    def _record(self, outcome: BatchOutcome) -> None:
        self.recorder.outcome(
            dict(outcome.applied), outcome.duplicates, outcome.redelivered,
            outcome.unknown_items, outcome.conflicts, outcome.freshness_s,
        )  # fmt: skip
        if outcome.credited:
            self.recorder.credited([(*arm, n) for arm, n in outcome.credited.items()])


def header_pairs(headers: Any) -> list[tuple[str, bytes]]:
    """A message's headers as (name, bytes) pairs, whether given as a dict or as pairs."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v) for k, v in items if isinstance(v, bytes)]


def _event_span(message: RawMessage, event_type: str, parent: Any) -> trace.Span:
    return tracer.start_span(
        f"{message.topic} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": message.topic,
            "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset,
            "recsys.event_type": event_type,
        },
    )
