"""Publishing accepted events to Kafka for POST /events.

The producer is started on first use, not at start-up: the API must serve /recommend while
Kafka is down, and begin publishing by itself once Kafka is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from api import metrics
from api.breaker import CircuitBreaker
from core.clients import ensure_topics, kafka_producer
from core.settings import Settings
from core.tracing import headers_with_context
from schemas import AnyEvent, encode_event, event_key, topic_for

tracer = trace.get_tracer("recsys.api")

log = logging.getLogger(__name__)
ProducerFactory = Callable[..., AIOKafkaProducer]
_PARTITIONER = DefaultPartitioner()
# Errors that end an aiokafka producer for good: its sender task stops, and every later send
# raises the same error. After a broker outage, an idempotent producer can get
# OutOfOrderSequenceNumber (batches it gave up on left a gap in its sequence numbers); the Java
# client then takes a new producer id, aiokafka does not, so the API would answer 503 until it
# restarted (found by tests/integration/test_faults_under_load.py). A new producer is started.
_PRODUCER_ENDED = (OutOfOrderSequenceNumber, ProducerFenced)


class KafkaUnavailableError(Exception):
    pass


class EventPublisher:
    def __init__(
        self,
        settings: Settings,
        breaker: CircuitBreaker,
        producer_factory: ProducerFactory = kafka_producer,
    ) -> None:
        self.settings = settings
        self.breaker = breaker
        self.timeout_s = settings.api_kafka_timeout_ms / 1000
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = self._producer_factory(
                    self.settings, request_timeout_ms=int(self.settings.api_kafka_timeout_ms)
                )
                try:
                    await ensure_topics(self.settings)
                    await producer.start()
                except BaseException:
                    await _stop_quietly(producer)
                    raise
                self._producer = producer
            return self._producer

    async def _guarded(self, action: Callable[[], Any]) -> None:
        if not self.breaker.allow():
            raise KafkaUnavailableError("Kafka is unreachable (circuit open); retry later")
        try:
            async with asyncio.timeout(self.timeout_s):
                await action()
        except Exception as exc:
            self.breaker.record_failure()
            log.warning("Kafka unavailable: %r", exc)
            if isinstance(exc, _PRODUCER_ENDED):
                await self._replace_producer(self._producer)
            raise KafkaUnavailableError(f"Kafka is unreachable ({type(exc).__name__})") from exc
        self.breaker.record_success()

    async def _replace_producer(self, ended: AIOKafkaProducer | None) -> None:
        """Drop the producer `ended` unless it was already replaced; the next publish starts a
        new one (with a new producer id)."""
        async with self._starting:
            if ended is None or self._producer is not ended:
                return
            self._producer = None
        await _stop_quietly(ended)

    async def publish(self, events: Sequence[AnyEvent]) -> None:
        """Send every event (keyed by user, trace context in the headers) and wait for the
        broker's acknowledgements. On failure some may already be on the broker: the client
        retries with the same event ids and the stream worker drops the duplicates."""

        async def send_all() -> None:
            producer = await self._started()
            topics = sorted({topic_for(e.event_type) for e in events})
            attributes: dict[str, str | int] = {
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": ",".join(topics),
                "messaging.batch.message_count": len(events),
            }
            # The producer span is what the worker's spans hang from: the headers carry it.
            with tracer.start_as_current_span(
                f"{','.join(topics)} publish", kind=SpanKind.PRODUCER, attributes=attributes
            ):
                headers = headers_with_context()
                pending = [
                    await producer.send(
                        topic_for(event.event_type),
                        encode_event(event),
                        key=event_key(event),
                        headers=headers,
                    )
                    for event in events
                ]
                await asyncio.gather(*pending)

        await self._guarded(send_all)
        metrics.EVENTS_PUBLISHED.inc(len(events))

    async def publish_raw(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Send encoded (key, value) messages to `topic` and wait for the acknowledgements:
        for records the API makes itself (impressions), which carry no trace context."""

        async def send_all() -> None:
            producer = await self._started()
            partitions = sorted(await producer.partitions_for(topic))
            # Batches built here, one per partition, instead of a `send` per message: a third
            # of the CPU per record (aiokafka's `send` costs ~100 µs each), on the event loop
            # that answers requests. The default partitioner keeps records keyed as `send` does.
            batches: dict[int, BatchBuilder] = {}
            pending = []
            for key, value in messages:
                partition = _PARTITIONER(key, partitions, partitions)
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # it is full
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for partition, batch in batches.items():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*pending)

        await self._guarded(send_all)

    async def check(self) -> None:
        """Readiness: connect if not yet connected (raises KafkaUnavailableError)."""
        await self._guarded(self._started)

    async def close(self) -> None:
        if self._producer is not None:
            await _stop_quietly(self._producer)
            self._producer = None


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    # Stopping a producer that never connected can raise; there is nothing left to release.
    with contextlib.suppress(Exception):
        await producer.stop()
