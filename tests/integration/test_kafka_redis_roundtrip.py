"""Real Kafka and Redis: topics, keyed events, a consumer group with manual commits, resume."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.clients import ensure_topics, kafka_common, kafka_producer, redis_client
from core.settings import Settings
from schemas import decode_event, encode_event, event_key, new_event

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_all_event_topics_once(service_settings: Settings) -> None:
    await ensure_topics(service_settings)
    assert await ensure_topics(service_settings) == []  # idempotent
    admin = AIOKafkaAdminClient(**kafka_common(service_settings))
    await admin.start()
    try:
        described = await admin.describe_topics(["events.click", "events.dlq"])
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == {
        "events.click": 4,
        "events.dlq": 4,
    }


async def _consume(
    consumer: AIOKafkaConsumer, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    received: list[ConsumerRecord[bytes, bytes]] = []
    async with asyncio.timeout(timeout_s):
        while len(received) < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=count - len(received))
            for records in batch.values():
                received.extend(records)
    return received


async def test_consumer_group_resumes_from_committed_offset(service_settings: Settings) -> None:
    topic = f"events.roundtrip.{uuid.uuid4().hex[:8]}"
    await ensure_topics(service_settings, (topic,))
    events = [new_event("click", f"user-{i % 5}", f"item-{i}") for i in range(20)]

    producer = kafka_producer(service_settings)
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, encode_event(event), key=event_key(event))
        await producer.flush()
    finally:
        await producer.stop()

    group = f"group-{uuid.uuid4().hex[:8]}"

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            **kafka_common(service_settings),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    first = consumer()
    await first.start()
    try:
        got_first = await _consume(first, 12)
        # Commit exactly what was processed, then stop as if the process went away.
        processed = got_first[:12]
        offsets: dict[TopicPartition, int] = {}
        for record in processed:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await first.commit(offsets)
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        got_second = await _consume(second, 8)
    finally:
        await second.stop()

    seen = [decode_event(r.value).event_id for r in processed + got_second]
    assert sorted(map(str, seen)) == sorted(
        str(e.event_id) for e in events
    )  # none lost, none twice
    # Keyed by user: all of one user's events land in one partition, in order.
    by_user: dict[bytes, set[int]] = {}
    for record in processed + got_second:
        by_user.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in by_user.values())


async def test_redis_ping_set_get(service_settings: Settings) -> None:
    client = redis_client(service_settings)
    try:
        assert await client.ping()
        await client.set("recsys:test:key", b"value", ex=30)
        assert await client.get("recsys:test:key") == b"value"
    finally:
        await client.aclose()
