"""Everything the routes use, created once in the app's lifespan and closed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from opentelemetry.trace import Tracer

from api.backends import GuardedBackend
from api.breaker import CircuitBreaker
from api.catalog import ItemStreamReads, item_stream_reads
from api.experiments import ExperimentWatch
from api.impressions import ImpressionRecorder
from api.popular_cache import PopularCache
from api.publisher import EventPublisher
from api.recommender import Backends, RecommendationService
from api.signal_cache import ITEM_SIGNALS_REFRESH_S
from core.clients import RedisClient, close_within, redis_client_for
from core.settings import Settings, env_var
from core.vectors import VectorIndex

log = logging.getLogger("api")
VectorIndexFactory = Callable[[Settings], VectorIndex]


@dataclass(frozen=True)
class Services:
    settings: Settings
    backends: Backends
    popular: PopularCache
    recommender: RecommendationService
    publisher: EventPublisher
    impressions: ImpressionRecorder
    tracer: Tracer
    experiments: ExperimentWatch

    @property
    def redis(self) -> RedisClient:
        return self.backends.redis

    @property
    def index(self) -> VectorIndex:
        return self.backends.index


def _breaker(settings: Settings, name: str) -> CircuitBreaker:
    return CircuitBreaker(name, settings.api_breaker_failures, settings.api_breaker_reset_s)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, tracer: Tracer, vector_index_factory: VectorIndexFactory
) -> AsyncIterator[Services]:
    if settings.api_key is None:
        log.warning(
            "!!! %s is not set: POST /events accepts writes from anyone. "
            "Set it (docker-compose does) for any deployment beyond a laptop. !!!",
            env_var("api_key"),
        )
    redis_timeout_s = settings.api_redis_timeout_ms / 1000
    # No socket timeout: every Redis call of the API runs under asyncio.timeout (the backend
    # guard, the popular and item-table loads, the readiness check), and redis-py disconnects
    # a connection whose read is cancelled. A socket timeout would add a task per command
    # (redis-py sends through asyncio.wait_for), on every request's path.
    redis = redis_client_for(settings, socket_connect_timeout=max(redis_timeout_s, 0.5))
    index = vector_index_factory(settings)
    backends = Backends(
        redis=redis,
        index=index,
        redis_guard=GuardedBackend(
            "redis", "redis", _breaker(settings, "redis"), redis_timeout_s, tracer
        ),
        qdrant_guard=GuardedBackend(
            "qdrant",
            "qdrant",
            _breaker(settings, "qdrant"),
            settings.api_qdrant_timeout_ms / 1000,
            tracer,
        ),
    )
    popular = PopularCache(redis, settings.api_popular_cache_size)
    publisher = EventPublisher(settings, _breaker(settings, "kafka"))
    impressions = ImpressionRecorder(settings, publisher)
    await popular.refresh()
    refresher = asyncio.create_task(popular.refresh_every(settings.api_popular_refresh_s))
    # A background read, off the request path: a generous timeout (a busy API still reads it).
    experiments = ExperimentWatch(redis, settings.running_experiment)
    await experiments.start()
    watcher = asyncio.create_task(experiments.refresh_every(settings.api_experiment_refresh_s))
    impressions.start()
    recommender = RecommendationService(settings, backends, popular, tracer, experiments)
    background = {refresher, watcher}
    if settings.api_clock == "wall":
        background.add(asyncio.create_task(_refresh_item_signals(recommender, redis, settings)))
    if popular.version is not None:
        # The active version's items (and ranker) before the first request, so that it is
        # answered as every later one is; a load that fails is retried by requests.
        await recommender.item_tables.wait_loaded(popular.version)
    try:
        yield Services(
            settings=settings,
            backends=backends,
            popular=popular,
            recommender=recommender,
            publisher=publisher,
            impressions=impressions,
            tracer=tracer,
            experiments=experiments,
        )
    finally:
        for task in background:
            task.cancel()
        await close_within("background refreshers", asyncio.wait(background))
        await close_within("impressions", impressions.close())
        await close_within("kafka producer", publisher.close())
        await close_within("vector index", index.close())
        await close_within("redis", redis.aclose())


async def _refresh_item_signals(
    recommender: RecommendationService, redis: RedisClient, settings: Settings
) -> None:
    """Keeps the ranking stage's candidate counts current off the request path
    (`api.signal_cache`); a background read, so a generous timeout."""

    async def read(item_ids: Sequence[str], now_s: float) -> ItemStreamReads:
        async with asyncio.timeout(BACKGROUND_READ_TIMEOUT_S):
            return await item_stream_reads(redis, item_ids, now_s, settings)

    cache = recommender.pipeline.item_signals
    await cache.refresh_every(ITEM_SIGNALS_REFRESH_S, read, time.time)


BACKGROUND_READ_TIMEOUT_S = 5.0
