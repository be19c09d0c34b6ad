"""Shared fixtures. Real services (Kafka, Redis) start once per session on free ports with the
same code as `recsys services up`, and stop at the end. A test that needs them fails, loudly,
if they cannot start: it is never skipped. Every test must carry exactly one tier marker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.clients import RedisClient, flush_everywhere, redis_client, redis_client_for
from core.settings import Settings
from infra.local.kafka import KafkaServer
from infra.local.process import ServiceError, free_port, free_port_run
from infra.local.redis import RedisServer
from infra.local.redis_cluster import RedisCluster

# The CLI's cache (RECSYS_CACHE_DIR, else the default): Kafka's jars are resolved once for both.
CACHE_DIR = Settings().cache_dir
TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a run that has a test in no tier or in several: `make unit` (-m unit) and its
    siblings would silently leave it out, or run it in two tiers."""
    wrong = [
        item.nodeid
        for item in items
        if sum(item.get_closest_marker(tier) is not None for tier in TIERS) != 1
    ]
    if wrong:
        raise pytest.UsageError(
            f"{len(wrong)} test(s) need exactly one tier marker ({', '.join(TIERS)}), for "
            "example `pytestmark = pytest.mark.unit` in the module: " + ", ".join(wrong[:10])
        )


@pytest.fixture(scope="session")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_server(services_home: Path) -> Iterator[KafkaServer]:
    server = KafkaServer(
        home=services_home / "kafka",
        port=free_port(),
        controller_port=free_port(),
        cache_dir=CACHE_DIR,
    )
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(services_home: Path) -> Iterator[RedisServer]:
    server = RedisServer(home=services_home / "redis", port=free_port())
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(f"could not start the test Redis: {exc}", pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_settings(
    kafka_server: KafkaServer, redis_server: RedisServer, services_home: Path
) -> Settings:
    """Settings pointing at the session's real Kafka and Redis."""
    return Settings(
        kafka_bootstrap_servers=kafka_server.bootstrap_servers,
        redis_url=redis_server.url,
        state_dir=services_home / "state",
        cache_dir=CACHE_DIR,
    )


@pytest.fixture
async def redis(service_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis, emptied first: each test starts from a clean slate."""
    client = redis_client(service_settings)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster_server(services_home: Path) -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster, for the tests that run on both topologies."""
    cluster = RedisCluster(services_home / "redis-cluster", free_port_run(3, also_at=10_000))
    try:
        cluster.start()
    except ServiceError as exc:
        pytest.fail(f"could not start the test Redis Cluster: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["standalone", "cluster"])
def topology_settings(request: pytest.FixtureRequest, service_settings: Settings) -> Settings:
    """The session's settings on one Redis, then on a Redis Cluster: a test that takes this
    runs once on each topology."""
    if request.param == "standalone":
        return service_settings
    cluster: RedisCluster = request.getfixturevalue("redis_cluster_server")
    return service_settings.model_copy(update={"redis_url": cluster.url, "redis_cluster": True})


@pytest.fixture
async def any_redis(topology_settings: Settings) -> AsyncIterator[RedisClient]:
    """A client of the Redis of `topology_settings`, emptied first (every primary of a
    cluster)."""
    client = redis_client_for(topology_settings)
    await flush_everywhere(client)
    yield client
    await client.aclose()
