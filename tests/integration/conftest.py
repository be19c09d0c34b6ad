"""Fixtures of the API tests: a real ALS model published into the session's Redis and an
embedded Qdrant shard, and the app (lifespan included) behind an httpx client."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from api.main import create_app
from batch.data import Dataset
from batch.publish import ModelArtifacts, publish
from batch.train import to_artifacts, train
from core.settings import Settings
from core.vectors.edge import EdgeVectorIndex
from infra.local.process import free_port
from recsys.client import NO_RETRY, AsyncRecsysClient


def taste_dataset() -> Dataset:
    """Users u0-u29 watch Comedy items, u30-u59 Drama; Action items are watched by everyone
    a little, so that every genre has popular items."""
    rng = np.random.default_rng(7)
    genres = {"c": "Comedy", "d": "Drama", "a": "Action"}
    item_ids = [f"{p}{i}" for p in genres for i in range(20)]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{genres[i[0]]} {i[1:]}" for i in item_ids],
            "genres": [(genres[i[0]],) for i in item_ids],
            "year": pd.array([2000] * len(item_ids), dtype="Int64"),
        }
    )
    rows: list[tuple[str, str, int, str, float]] = []
    for user in range(60):
        prefix = "c" if user < 30 else "d"
        picks = [f"{prefix}{i}" for i in rng.choice(20, size=8, replace=False)]
        picks += [f"a{i}" for i in rng.choice(20, size=2, replace=False)]
        for item in picks:
            rows.append((f"u{user}", item, 1_700_000_000 + len(rows), "rating", 1.0))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type", "weight"])
    interactions["weight"] = interactions["weight"].astype(np.float32)
    return Dataset(name="tastes", interactions=interactions, items=items)


@pytest.fixture(scope="session")
def taste_model() -> ModelArtifacts:
    dataset = taste_dataset()
    trained = train(dataset, "als", {"factors": 8, "iterations": 15, "random_state": 1})
    return to_artifacts(trained, dataset.name, "als")


@dataclass(frozen=True)
class Published:
    version: str
    qdrant_path: Path
    artifacts: ModelArtifacts


async def publish_model(artifacts: ModelArtifacts, redis: aioredis.Redis, root: Path) -> Published:
    index = EdgeVectorIndex(root / "qdrant")
    version = await publish(artifacts, index, redis, root / "models")
    await index.close()
    return Published(version, root / "qdrant", artifacts)


@pytest.fixture
async def published(
    redis: aioredis.Redis, taste_model: ModelArtifacts, tmp_path: Path
) -> Published:
    return await publish_model(taste_model, redis, tmp_path)


@pytest.fixture
def model_version(published: Published) -> str:
    return published.version


ApiSettings = Callable[..., Settings]


@pytest.fixture
def make_api_settings(service_settings: Settings, tmp_path: Path) -> ApiSettings:
    return api_settings_factory(service_settings, tmp_path)


def api_settings_factory(base: Settings, tmp_path: Path) -> ApiSettings:
    """Settings for an app under test on `base`'s services: generous timeouts (the test machine
    is shared and slow) and a breaker that retries fast; keyword arguments override any
    field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "qdrant_path": tmp_path / "qdrant",
            "api_request_budget_ms": 5000,
            "api_redis_timeout_ms": 2000,
            "api_qdrant_timeout_ms": 2000,
            "api_kafka_timeout_ms": 10000,
            "api_breaker_reset_s": 0.2,
            "api_popular_refresh_s": 0.2,
            **overrides,
        }
        return base.model_copy(update=values)

    return make


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, and a client that calls it in-process."""
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://api"
        ) as client,
    ):
        yield client


Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@contextmanager
def served_over_http(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on a free 127.0.0.1 port, in a thread with its own event
    loop (for clients in other processes); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def typed(client: httpx.AsyncClient) -> AsyncRecsysClient:
    """The typed client (`recsys.client`) over a served app's client, without retries: what
    the simulator sends with."""
    return AsyncRecsysClient(http=client, retry=NO_RETRY)


@pytest.fixture
def serve() -> Serve:
    return serving


@pytest.fixture
async def api(
    make_api_settings: ApiSettings, published: Published
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app serving the published model from the session's Redis and Kafka."""
    async with serving(create_app(make_api_settings())) as client:
        yield client
