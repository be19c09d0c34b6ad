"""Client factories: a process creates its clients once (app start, lifespan) and passes them in.

Nothing here is a module-level client; these functions only translate `Settings` into
correctly configured client objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from redis import exceptions as redis_errors

from core.settings import Settings
from schemas.topics import ALL_TOPICS

log = logging.getLogger(__name__)


def kafka_common(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers}
    if settings.kafka_username and settings.kafka_password:
        options |= {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": settings.kafka_username,
            "sasl_plain_password": settings.kafka_password.get_secret_value(),
        }
    return options


# A client of one Redis, or of a Redis Cluster (RECSYS_REDIS_CLUSTER=true). Code that takes one
# uses only what both offer: commands on keys, pipelines, scripts (`core.scripts`).
RedisClient = aioredis.Redis | aioredis.RedisCluster


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """A client of the one Redis RECSYS_REDIS_URL names (see `redis_client_for` for either)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client: aioredis.Redis = aioredis.Redis.from_url(
        settings.redis_url, password=password, decode_responses=False, **options
    )
    return client


def redis_client_for(settings: Settings, **options: Any) -> RedisClient:
    """A client of the Redis the settings name: a cluster client (the URL is a seed node) with
    RECSYS_REDIS_CLUSTER=true, else a client of one server."""
    if not settings.redis_cluster:
        return redis_client(settings, **options)
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    cluster: aioredis.RedisCluster = aioredis.RedisCluster.from_url(
        settings.redis_url, password=password, decode_responses=False, **options
    )
    return cluster


# Errors of a Redis that is away for now (down, restarting, loading, failing over) rather than of
# the command sent: the caller waits and sends the same thing again.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,  # CLUSTERDOWN: a shard lost, the cluster not yet healed
    redis_errors.TryAgainError,  # a slot moving between shards
    redis_errors.MasterDownError,  # a master failing over to its replica
    redis_errors.SlotNotCoveredError,  # no node known to serve the slot yet
    ConnectionError,
    OSError,
)


# Any failure of a Redis or Redis Cluster call (a cluster client's own errors are not
# RedisErrors): what a command catches to print a clear message instead of a traceback.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.RedisError,
    redis_errors.RedisClusterException,
    OSError,
)


def redis_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means "Redis is away for now, try again" rather than a bad command.

    A cluster client that reaches none of its nodes raises a bare RedisClusterException ("cannot
    be connected") caused by the connection error; the same class also reports mistakes such as
    keys of several slots in one call, which retrying would never fix, so its cause decides."""
    if isinstance(exc, REDIS_UNAVAILABLE):
        return True
    cause = exc.__cause__ or exc.__context__
    return (
        isinstance(exc, redis_errors.RedisClusterException)
        and cause is not None
        and (redis_unavailable(cause))
    )


async def flush_everywhere(client: RedisClient) -> None:
    """Empty the one Redis, or every primary of a cluster (tests and benchmarks start clean)."""
    if isinstance(client, aioredis.RedisCluster):
        await client.flushdb(target_nodes=aioredis.RedisCluster.PRIMARIES)
    else:
        await client.flushdb()


def kafka_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    # acks=all + idempotence: an event accepted by the API is on the broker, once.
    defaults: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    return AIOKafkaProducer(**kafka_common(settings), **(defaults | options))


async def ensure_topics(
    settings: Settings, topics: tuple[str, ...] = ALL_TOPICS, *, retention_days: int = 7
) -> list[str]:
    """Create any missing topics (partitions from settings); return the names created."""
    admin = AIOKafkaAdminClient(**kafka_common(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs={"retention.ms": str(retention_days * 86_400_000)},
            )
            for name in topics
            if name not in existing
        ]
        if wanted:
            # Another process may create them in between: the goal is reached all the same.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def close_within(name: str, closing: Awaitable[object], timeout_s: float = 5.0) -> None:
    """Await one shutdown step, but never longer than `timeout_s`: a client whose peer
    vanished mid-connection can wait forever on its socket (redis-py's `wait_closed` does
    after a Redis restart), and a stuck close must not keep the process from exiting."""
    try:
        async with asyncio.timeout(timeout_s):
            await closing
    except TimeoutError:
        log.warning("closing %s took over %.0f s; abandoned", name, timeout_s)
    except Exception as exc:  # the resource is being dropped either way
        log.warning("closing %s failed: %r", name, exc)
