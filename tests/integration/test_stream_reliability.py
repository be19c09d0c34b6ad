"""Crashes and outages: nothing lost, nothing counted twice, the worker carries on; each test
runs on one Redis and on a 3-master Redis Cluster.

The outage tests get their own Kafka broker and Redis (with AOF, so a restart keeps its data;
on a cluster, every node stops and starts), because they stop and restart them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.clients import RedisClient, ensure_topics, flush_everywhere, redis_client_for
from core.settings import Settings
from infra.local.kafka import KafkaServer
from infra.local.process import free_port, free_port_run
from infra.local.redis import RedisServer
from infra.local.redis_cluster import RedisCluster
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
    topology_settings: Settings, any_redis: RedisClient, tmp_path: Path
) -> None:
    service_settings, redis = topology_settings, any_redis
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


async def _some_applied(redis: RedisClient, users: set[str]) -> bool:
    return await applied_count(redis, users) > 0


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    home = tmp_path_factory.mktemp("own-kafka")
    kafka = KafkaServer(home, free_port(), free_port(), CACHE_DIR)
    kafka.start()
    yield kafka
    kafka.stop()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("own-redis"), free_port(), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    home = tmp_path_factory.mktemp("own-redis-cluster")
    cluster = RedisCluster(home, free_port_run(3, also_at=10_000), appendonly=True)
    cluster.start()
    yield cluster
    cluster.stop()


@dataclass(frozen=True)
class Own:
    """Services of this module's outage tests: settings, a client, and the Redis to stop."""

    settings: Settings
    redis: RedisClient
    redis_server: RedisServer | RedisCluster
    kafka: KafkaServer


@pytest.fixture(params=["standalone", "cluster"])
async def own(
    request: pytest.FixtureRequest, own_kafka: KafkaServer, tmp_path: Path
) -> AsyncIterator[Own]:
    redis_server: RedisServer | RedisCluster
    if request.param == "standalone":
        redis_server = request.getfixturevalue("own_redis")
    else:
        redis_server = request.getfixturevalue("own_redis_cluster")
    settings = Settings(
        kafka_bootstrap_servers=own_kafka.bootstrap_servers,
        redis_url=redis_server.url,
        redis_cluster=isinstance(redis_server, RedisCluster),
        state_dir=tmp_path / "state",
    )
    client = redis_client_for(settings)
    await flush_everywhere(client)
    await ensure_topics(settings)
    yield Own(settings, client, redis_server, own_kafka)
    await client.aclose()


async def test_redis_down_for_10_s_mid_stream_loses_and_doubles_nothing(
    own: Own, tmp_path: Path
) -> None:
    settings, redis, redis_server = own.settings, own.redis, own.redis_server
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
        await asyncio.to_thread(redis_server.stop)
        down_since = time.monotonic()
        await asyncio.sleep(10)
        assert worker.alive, worker.log_tail()
        await asyncio.to_thread(redis_server.start)
        assert time.monotonic() - down_since >= 10
        await producing
        await wait_until(lambda: all_applied(redis, users, len(events)), 90, "all events", worker)
        await assert_applied_exactly_once(redis, events)
        assert "recsys_stream_redis_errors_total" in worker.metrics()
        assert worker.alive
    finally:
        worker.stop()


async def test_broker_restart_the_worker_reconnects_and_carries_on(
    own: Own, tmp_path: Path
) -> None:
    settings, redis, kafka = own.settings, own.redis, own.kafka
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
