"""Crashes and outages: nothing lost, nothing counted twice, the worker carries on.

The outage tests get their own Kafka broker and Redis (with AOF, so a restart keeps its data),
because they stop and restart them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.clients import ensure_topics, redis_client
from core.settings import Settings
from infra.local.kafka import KafkaServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from recsys.processes import WorkerProcess, wait_until
from tests.conftest import CACHE_DIR
from tests.integration.test_stream_worker import (
    FULL_HISTORY,
    all_applied,
    applied_count,
    as_messages,
    assert_applied_exactly_once,
    make_events,
    produce,
    publish_model,
)

pytestmark = pytest.mark.integration


async def produce_paced(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes]], per_second: float
) -> None:
    """Publish at a steady pace so that crashes and outages land mid-stream."""
    chunk = max(1, int(per_second / 20))
    for start in range(0, len(messages), chunk):
        await produce(settings, messages[start : start + chunk])
        await asyncio.sleep(chunk / per_second)


async def test_kill_9_mid_stream_with_duplicates_applies_everything_once(
    service_settings: Settings, redis: aioredis.Redis, tmp_path: Path
) -> None:
    await ensure_topics(service_settings)
    await publish_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    events = make_events(prefix, users=40, count=2400)
    messages = as_messages(events)
    messages += as_messages(events[::12])  # 200 duplicate publishes of the same events
    users = {e.user_id for e in events}
    group = f"g-{prefix}"

    first = WorkerProcess(service_settings, tmp_path, group, env=FULL_HISTORY).start()
    # A new group starts from the earliest offsets, behind what earlier tests published: let it
    # catch up first, so that the kill below lands while this test's stream is still flowing.
    warm_up = make_events(f"{prefix}w", users=20, count=100)
    await produce(service_settings, as_messages(warm_up))
    warm_users = {e.user_id for e in warm_up}
    await wait_until(lambda: all_applied(redis, warm_users, 100), 90, "the backlog", first)
    producing = asyncio.create_task(produce_paced(service_settings, messages, per_second=600))
    await wait_until(lambda: _some_applied(redis, users), 60, "the first events", first)
    first.kill()  # mid-stream: some batches applied, some offsets not committed
    applied_at_kill = await applied_count(redis, users)
    assert 0 < applied_at_kill < len(events)

    second = WorkerProcess(service_settings, tmp_path, group, env=FULL_HISTORY).start()
    try:
        await producing
        await wait_until(lambda: all_applied(redis, users, len(events)), 90, "all events", second)
        await asyncio.sleep(2)  # let anything left over arrive: it must change nothing
        await assert_applied_exactly_once(redis, events)
        assert await applied_count(redis, users) == len(events)
    finally:
        second.stop()


async def _some_applied(redis: aioredis.Redis, users: set[str]) -> bool:
    return await applied_count(redis, users) > 0


@pytest.fixture(scope="module")
def own_services(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KafkaServer, RedisServer]]:
    home = tmp_path_factory.mktemp("own-services")
    kafka = KafkaServer(home / "kafka", free_port(), free_port(), CACHE_DIR)
    redis_server = RedisServer(home / "redis", free_port(), appendonly=True)
    kafka.start()
    redis_server.start()
    yield kafka, redis_server
    kafka.stop()
    redis_server.stop()


@pytest.fixture
async def own(
    own_services: tuple[KafkaServer, RedisServer], tmp_path: Path
) -> AsyncIterator[tuple[Settings, aioredis.Redis]]:
    kafka, redis_server = own_services
    settings = Settings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        redis_url=redis_server.url,
        state_dir=tmp_path / "state",
    )
    client = redis_client(settings)
    await client.flushdb()
    await ensure_topics(settings)
    yield settings, client
    await client.aclose()


async def test_redis_down_for_10_s_mid_stream_loses_and_doubles_nothing(
    own: tuple[Settings, aioredis.Redis],
    own_services: tuple[KafkaServer, RedisServer],
    tmp_path: Path,
) -> None:
    settings, redis = own
    _, redis_server = own_services
    await publish_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    events = make_events(prefix, users=20, count=1500)
    users = {e.user_id for e in events}
    worker = WorkerProcess(settings, tmp_path, f"g-{prefix}", env=FULL_HISTORY).start()
    try:
        producing = asyncio.create_task(
            produce_paced(settings, as_messages(events), per_second=100)
        )
        await wait_until(lambda: _some_applied(redis, users), 60, "the first events", worker)
        redis_server.stop()
        down_since = time.monotonic()
        await asyncio.sleep(10)
        assert worker.alive, worker.log_tail()
        redis_server.start()
        assert time.monotonic() - down_since >= 10
        await producing
        await wait_until(lambda: all_applied(redis, users, len(events)), 90, "all events", worker)
        await assert_applied_exactly_once(redis, events)
        assert "recsys_stream_redis_errors_total" in worker.metrics()
        assert worker.alive
    finally:
        worker.stop()


async def test_broker_restart_the_worker_reconnects_and_carries_on(
    own: tuple[Settings, aioredis.Redis],
    own_services: tuple[KafkaServer, RedisServer],
    tmp_path: Path,
) -> None:
    settings, redis = own
    kafka, _ = own_services
    await publish_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    before, after = make_events(f"{prefix}a", 10, 200), make_events(f"{prefix}b", 10, 200)
    worker = WorkerProcess(settings, tmp_path, f"g-{prefix}", env=FULL_HISTORY).start()
    try:
        await produce(settings, as_messages(before))
        users_before = {e.user_id for e in before}
        await wait_until(lambda: all_applied(redis, users_before, 200), 60, "events before", worker)
        # Its readiness check runs its own event loop, so it runs in a thread.
        await asyncio.to_thread(kafka.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(kafka.start)
        await produce(settings, as_messages(after))
        users_after = {e.user_id for e in after}
        await wait_until(lambda: all_applied(redis, users_after, 200), 120, "events after", worker)
        await assert_applied_exactly_once(redis, before + after)
        assert worker.alive
    finally:
        worker.stop()
