"""With Redis stopped or the vector index failing, /recommend still answers 200 with a fallback
source and a reason, and goes back to personalized answers once the backend is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from api.main import create_app
from batch.publish import ModelArtifacts, publish
from core.clients import redis_client
from core.settings import Settings
from core.vectors import ItemFilter, PointScores, SearchHit
from core.vectors.base import VectorIndexError
from core.vectors.edge import EdgeVectorIndex
from infra.local.process import free_port
from infra.local.redis import RedisServer

pytestmark = pytest.mark.integration

# The fixtures of the same names in conftest.py.
ApiSettings = Callable[..., Settings]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

RECOVERY_TRIES = 100  # polls 0.1 s apart: recovery needs one breaker period (0.2 s in tests)


class SwitchableIndex(EdgeVectorIndex):
    """The real embedded index, whose reads fail while `failing` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failing = False

    async def search(
        self,
        version: str,
        vector: np.ndarray,
        k: int,
        item_filter: ItemFilter | None = None,
        *,
        with_vectors: bool = False,
        payload_fields: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        if self.failing:
            raise VectorIndexError("injected failure")
        return await super().search(
            version,
            vector,
            k,
            item_filter,
            with_vectors=with_vectors,
            payload_fields=payload_fields,
        )

    async def search_points(
        self, version: str, vector: np.ndarray, k: int, item_filter: ItemFilter | None = None
    ) -> PointScores:
        if self.failing:
            raise VectorIndexError("injected failure")
        return await super().search_points(version, vector, k, item_filter)

    async def get(
        self, version: str, item_ids: Sequence[str], *, with_vectors: bool = True
    ) -> list[SearchHit]:
        if self.failing:
            raise VectorIndexError("injected failure")
        return await super().get(version, item_ids, with_vectors=with_vectors)


async def until_source(client: httpx.AsyncClient, source: str) -> dict[str, Any]:
    """Poll /recommend until it answers from `source`; every answer on the way must be 200."""
    for _ in range(RECOVERY_TRIES):
        response = await client.get("/recommend/u3", params={"k": 5})
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        if body["source"] == source:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/recommend never answered from {source}; last: {body}")


async def test_failing_vector_index_falls_back_and_recovers(
    make_api_settings: ApiSettings, serve: Serve, model_version: str, tmp_path: Path
) -> None:
    index = SwitchableIndex(tmp_path / "qdrant")
    app = create_app(make_api_settings(), vector_index_factory=lambda _: index)
    async with serve(app) as client:
        assert (await client.get("/recommend/u3")).json()["source"] == "personalized"
        index.failing = True
        for _ in range(8):  # past the breaker's threshold: refused calls fall back the same
            response = await client.get("/recommend/u3", params={"k": 5})
            assert response.status_code == 200
            body = response.json()
            assert body["source"] == "popular"  # no trending events in this test
            assert body["reason"].startswith(("qdrant_error", "qdrant_open_circuit"))
            assert body["model_version"] == model_version
            assert len(body["items"]) == 5
        assert (await client.get("/items/c1/similar")).status_code == 503
        index.failing = False
        await until_source(client, "personalized")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may stop and restart (append-only, so the model survives)."""
    server = RedisServer(home=tmp_path / "redis", port=free_port(), appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_redis_settings(
    own_redis: RedisServer,
    make_api_settings: ApiSettings,
    taste_model: ModelArtifacts,
    tmp_path: Path,
) -> Settings:
    settings = make_api_settings(redis_url=own_redis.url)
    client = redis_client(settings)
    index = EdgeVectorIndex(tmp_path / "qdrant")
    await publish(taste_model, index, client, tmp_path / "models")
    await index.close()
    await client.aclose()
    return settings


async def test_redis_down_answers_from_memory_and_recovers(
    own_redis: RedisServer, own_redis_settings: Settings, serve: Serve
) -> None:
    async with serve(create_app(own_redis_settings)) as client:
        assert (await client.get("/recommend/u3")).json()["source"] == "personalized"
        await asyncio.to_thread(own_redis.stop)
        for _ in range(8):
            response = await client.get("/recommend/u3", params={"k": 5, "genres": "Action"})
            assert response.status_code == 200
            body = response.json()
            assert body["source"] == "popular"
            assert body["reason"].startswith("redis_")
            assert len(body["items"]) == 5
            assert all(item["genres"] == ["Action"] for item in body["items"])
        profile = await client.get("/users/u3/profile")
        assert profile.status_code == 503
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("error")
        await asyncio.to_thread(own_redis.start)
        await until_source(client, "personalized")
