"""`recsys simulate` publishes valid, keyed events to the real broker, at the asked rate."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.clients import ensure_topics, kafka_common
from core.settings import Settings
from schemas import AnyEvent, decode_event
from schemas.topics import EVENT_TOPICS
from tests.integration.test_stream_worker import publish_model

pytestmark = pytest.mark.integration


async def test_simulate_publishes_what_it_reports(
    service_settings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    await ensure_topics(service_settings)
    await publish_model(redis, tmp_path)
    consumer = AIOKafkaConsumer(**kafka_common(service_settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in EVENT_TOPICS
            for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        ]
        start = await consumer.end_offsets(partitions)
        env = {
            **os.environ,
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": service_settings.kafka_bootstrap_servers,
            "RECSYS_REDIS_URL": service_settings.redis_url,
        }
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "recsys", "simulate", "--rate", "300", "--duration", "2",
             "--users", "40"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        sent = int(re.search(r"sent ([\d,]+) events", run.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
        assert 450 <= sent <= 600  # 300/s for 2 s, give or take a tick

        end = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, start[tp])
        expected = sum(end[tp] - start[tp] for tp in partitions)
        assert expected == sent
        events: list[AnyEvent] = []
        while len(events) < expected:
            batch = await consumer.getmany(timeout_ms=1000)
            assert batch, f"only {len(events)} of {expected} events arrived"
            for tp, records in batch.items():
                for record in records:
                    event = decode_event(record.value or b"")
                    assert record.key == event.user_id.encode()
                    assert tp.topic == f"events.{event.event_type}"
                    events.append(event)
    finally:
        await consumer.stop()
    assert {e.user_id for e in events} <= {f"sim-u{n}" for n in range(40)}
    assert {e.event_type for e in events} == {"view", "click", "purchase"}


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # metadata of unassigned topics
    return consumer.partitions_for_topic(topic) or set()
