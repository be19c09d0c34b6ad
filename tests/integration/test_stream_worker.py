"""The stream worker as a real process against real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from batch.publish import ModelArtifacts, publish
from core import keys
from core.clients import RedisClient, ensure_topics, kafka_common, kafka_producer
from core.settings import Settings
from core.user_state import load_state, load_states
from core.vectors.edge import EdgeVectorIndex
from recsys.processes import WorkerProcess, wait_until
from schemas import AnyEvent, EventType, encode_event, event_key, new_event, topic_for
from schemas.dead_letter import DeadLetter
from schemas.topics import DLQ_TOPIC

pytestmark = pytest.mark.integration

ITEMS = [f"i{i}" for i in range(30)]
# Keep every event in a user's history, so that histories can be compared with what was sent.
FULL_HISTORY = {"RECSYS_STREAM_HISTORY_LENGTH": "1000"}


async def publish_model(redis: RedisClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    artifacts = ModelArtifacts(
        model="als",
        dataset="unit",
        user_ids=np.array(["nobody"]),
        item_ids=np.array(ITEMS),
        user_vectors=rng.standard_normal((1, 8)).astype(np.float32),
        item_vectors=rng.standard_normal((len(ITEMS), 8)).astype(np.float32),
        item_payloads=[{"title": i, "genres": ["Drama"], "year": None} for i in ITEMS],
        popularity=np.ones(len(ITEMS), dtype=np.int64),
        trained_until=0,
    )
    index = EdgeVectorIndex(tmp_path / "qdrant")
    await publish(artifacts, index, redis, tmp_path / "models")
    await index.close()


def make_events(prefix: str, users: int, count: int) -> list[AnyEvent]:
    rng = np.random.default_rng(1)
    start = datetime.now(UTC) - timedelta(minutes=5)
    kinds: tuple[EventType, ...] = ("view", "click", "purchase")
    return [
        new_event(
            kinds[int(rng.integers(3))],
            f"{prefix}-u{int(rng.integers(users))}",
            ITEMS[int(rng.integers(len(ITEMS)))],
            ts=start + timedelta(milliseconds=n),
        )
        for n in range(count)
    ]


async def produce(settings: Settings, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = kafka_producer(settings)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def as_messages(events: list[AnyEvent]) -> list[tuple[str, bytes | None, bytes]]:
    return [(topic_for(e.event_type), event_key(e), encode_event(e)) for e in events]


async def applied_count(redis: RedisClient, users: set[str]) -> int:
    states = await load_states(redis, [keys.user_state(user) for user in users])
    return sum(state.events for state in states if state)


async def all_applied(redis: RedisClient, users: set[str], expected: int) -> bool:
    return await applied_count(redis, users) == expected


async def assert_applied_exactly_once(redis: RedisClient, events: list[AnyEvent]) -> None:
    """Per-user counts, histories and window totals match the distinct events published."""
    distinct = {e.event_id: e for e in events}
    by_user: dict[str, list[AnyEvent]] = {}
    for event in distinct.values():
        by_user.setdefault(event.user_id, []).append(event)
    for user, mine in by_user.items():
        state = await load_state(redis, user)
        assert state.events == len(mine), user
        assert Counter((h.item_id, h.event_type, h.ts_ms) for h in state.history) == Counter(
            (e.item_id, e.event_type, int(e.ts.timestamp() * 1000)) for e in mine
        ), user
        window_total = sum(
            sum(w.counts.values())
            for w in (state.windows.get("1h"), state.windows.get("1h_prev"))
            if w
        )
        assert window_total == len(mine), user


async def test_worker_applies_events_and_dead_letters_malformed_ones(
    topology_settings: Settings, any_redis: RedisClient, tmp_path: Path
) -> None:
    """On one Redis and on a Redis Cluster."""
    service_settings, redis = topology_settings, any_redis
    await ensure_topics(service_settings)
    await publish_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    events = make_events(prefix, users=10, count=300)
    marker = f"bad-{prefix}"
    good = as_messages(events)
    valid_body = json.loads(encode_event(events[0]))
    malformed: list[bytes] = [f"{marker} not json {n}".encode() for n in range(10)]
    for n, (field, value) in enumerate(
        [("user_id", ""), ("user_id", 5), ("item_id", "x" * 200), ("event_id", "nope"),
         ("ts", "2024-01-01T00:00:00"), ("ts", "3024-01-01T00:00:00Z"), ("event_type", "like"),
         ("schema_version", 9), ("context", {f"k{i}": i for i in range(30)}), (marker, 1)]
    ):  # fmt: skip
        for copy in range(5):
            body = {
                **valid_body,
                "event_id": str(uuid.uuid4()),
                "session_id": f"{marker}-{n}-{copy}",
            }
            body[field] = value
            malformed.append(json.dumps(body).encode())
    assert len(set(malformed)) == 60
    mixed: list[tuple[str, bytes | None, bytes]] = []
    for n, message in enumerate(good):
        mixed.append(message)
        if n % 5 == 0 and malformed:
            mixed.append(("events.click", b"bad-key", malformed.pop()))
    mixed += [("events.view", None, m) for m in malformed]

    worker = WorkerProcess(service_settings, tmp_path, f"g-{prefix}", env=FULL_HISTORY).start()
    try:
        await produce(service_settings, mixed)
        users = {e.user_id for e in events}
        await wait_until(
            lambda: all_applied(redis, users, len(events)), 60, "events applied", worker
        )
        await assert_applied_exactly_once(redis, events)
        letters = await read_dead_letters(service_settings, marker, expected=60)
        assert len(letters) == 60
        assert {letter.field for letter in letters} >= {
            "body", "user_id", "item_id", "event_id", "ts", "event_type", "schema_version",
            "context", marker,
        }  # fmt: skip
        assert all(letter.source_topic.startswith("events.") for letter in letters)
        assert all(marker.encode() in letter.original for letter in letters)
        assert worker.alive
        assert 'recsys_stream_dlq_total{field="ts"}' in worker.metrics()
        assert worker.readiness() == (
            200,
            {"ready": True, "partitions_assigned": True, "applying": True},
        )
    finally:
        worker.stop()


async def read_dead_letters(settings: Settings, marker: str, expected: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        DLQ_TOPIC, **kafka_common(settings), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        letter = DeadLetter.model_validate_json(record.value or b"")
                        if marker.encode() in letter.original:
                            found.append(letter)
    finally:
        await consumer.stop()
    return found
