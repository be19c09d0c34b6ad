"""The personalized path with the version's item table in memory (ids and scores from the index,
the rest from the table) answers exactly as it does from the index's payloads, which it still
uses while the table is not (or cannot be) loaded."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from api.item_table import ItemTables
from api.main import create_app
from core import keys
from core.settings import Settings
from tests.integration.conftest import Published
from tests.integration.test_api_recommend import write_online_state

pytestmark = pytest.mark.integration

ApiSettings = Callable[..., Settings]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

QUERIES: list[dict[str, Any]] = [
    {"k": 5},
    {"k": 8, "diversity": 0.3, "explain": "true"},
    {"k": 6, "genres": "Drama", "explain": "true"},
    {"k": 10, "exclude_genres": ["Comedy"], "exclude_ids": "a1,a2"},
]


async def answers(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    bodies = []
    for params in QUERIES:
        response = await client.get("/recommend/u3", params=params)
        assert response.status_code == 200
        body = response.json()
        body.pop("recommendation_id")  # each answer's own; the rest must match
        bodies.append(body)
    return bodies


async def test_item_table_answers_like_the_index_payloads(
    make_api_settings: ApiSettings,
    serve: Serve,
    redis: aioredis.Redis,
    published: Published,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version = published.version
    await write_online_state(redis, version, "u3", history=["c1", "c2", "a3"])
    app = create_app(make_api_settings())
    async with serve(app) as client:
        tables: ItemTables = app.state.services.recommender.item_tables
        table = await tables.wait_loaded(version)
        assert table is not None
        assert sorted(table.item_ids) == sorted(str(i) for i in published.artifacts.item_ids)
        np.testing.assert_allclose(np.linalg.norm(table.unit_vectors, axis=1), 1.0, rtol=1e-5)
        from_table = await answers(client)
        with monkeypatch.context() as patch:
            patch.setattr(tables, "get", lambda _version: None)  # as while the table loads
            from_payloads = await answers(client)

    assert all(body["source"] == "personalized" for body in from_table)
    assert all(item["explanation"] for item in from_table[1]["items"])
    assert all(item["genres"] == ["Drama"] for item in from_table[2]["items"])
    assert from_table == from_payloads


async def test_without_an_item_table_requests_read_the_index_payloads(
    make_api_settings: ApiSettings,
    serve: Serve,
    redis: aioredis.Redis,
    published: Published,
) -> None:
    # A version whose items Redis cannot give: the table never loads, and is not retried
    # on every request.
    await redis.delete(keys.item_vectors(published.version))
    app = create_app(make_api_settings())
    async with serve(app) as client:
        tables: ItemTables = app.state.services.recommender.item_tables
        assert await tables.wait_loaded(published.version) is None
        for _ in range(3):
            body = (await client.get("/recommend/u3", params={"k": 5})).json()
            assert body["source"] == "personalized"
            assert all(item["title"] for item in body["items"])
            assert tables.get(published.version) is None
            assert not tables.loading
