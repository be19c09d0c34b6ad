"""GET /recommend, /items/{id}/similar and /users/{id}/profile against a real published model."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from core import keys
from core.clients import RedisClient
from core.model_version import batch_user_vector
from core.rules import WindowCounts, trending_epoch
from core.settings import Settings
from core.user_state import History, HistoryEntry, UserState, version_tag
from tests.integration.conftest import ApiSettings, api_settings_factory

pytestmark = pytest.mark.integration


@pytest.fixture
def redis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one Redis and on a Redis Cluster (`any_redis`)."""
    return any_redis


@pytest.fixture
def make_api_settings(topology_settings: Settings, tmp_path: Path) -> ApiSettings:
    return api_settings_factory(topology_settings, tmp_path)


async def write_online_state(
    redis: RedisClient, version: str, user: str, history: list[str]
) -> None:
    """A user state as the stream worker writes it: the vector in the active model's space and
    recent history (newest first)."""
    vector = await batch_user_vector(redis, version, user)
    now_ms = int(time.time() * 1000)
    entries = [HistoryEntry(now_ms - i, "click", item) for i, item in enumerate(history)]
    state = UserState(
        vector=vector,
        vector_version=version_tag(version),
        events=len(history),
        last_event_ms=now_ms,
        windows={"5m": WindowCounts(now_ms // 300_000 * 300, {"click": len(history)})},
        genres={"Comedy": 3.0, "Action": 0.5},
        recent=History().push(entries, 50),
    )
    await redis.set(keys.user_state(user), state.encode(now_ms))


def item_ids(body: dict[str, object]) -> list[str]:
    items = body["items"]
    assert isinstance(items, list)
    return [item["item_id"] for item in items]


async def test_user_with_a_batch_vector_gets_personalized_items_of_their_taste(
    api: httpx.AsyncClient, model_version: str
) -> None:
    response = await api.get("/recommend/u3", params={"k": 5, "diversity": 1.0})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "personalized"
    assert body["model_version"] == model_version
    assert "reason" not in body
    assert len(body["items"]) == 5
    assert all(item["source"] == "personalized" for item in body["items"])
    assert body["items"][0]["genres"] == ["Comedy"]  # u3 only ever watched Comedy and Action
    assert all(item["title"] for item in body["items"])


async def test_seen_items_are_excluded_and_explanations_name_them(
    api: httpx.AsyncClient, redis: RedisClient, model_version: str
) -> None:
    before = item_ids((await api.get("/recommend/u3", params={"k": 5})).json())
    await write_online_state(redis, model_version, "u3", history=before[:3])

    response = await api.get("/recommend/u3", params={"k": 5, "explain": "true"})
    body = response.json()
    assert body["source"] == "personalized"
    assert not set(before[:3]) & set(item_ids(body))
    for item in body["items"]:
        contributors = [c["item_id"] for c in item["explanation"]]
        assert contributors
        assert set(contributors) <= set(before[:3])
        similarities = [c["similarity"] for c in item["explanation"]]
        assert similarities == sorted(similarities, reverse=True)


async def test_genre_and_id_filters_apply(api: httpx.AsyncClient) -> None:
    drama = (await api.get("/recommend/u3", params={"k": 8, "genres": "Drama"})).json()
    assert drama["source"] == "personalized"
    assert len(drama["items"]) == 8
    assert all(item["genres"] == ["Drama"] for item in drama["items"])

    no_comedy = (
        await api.get("/recommend/u3", params={"k": 10, "exclude_genres": ["Comedy", "Action"]})
    ).json()
    assert all(item["genres"] == ["Drama"] for item in no_comedy["items"])

    top = item_ids((await api.get("/recommend/u3", params={"k": 3})).json())
    without = (await api.get("/recommend/u3", params={"k": 3, "exclude_ids": ",".join(top)})).json()
    assert not set(top) & set(item_ids(without))


async def test_lower_diversity_lambda_changes_the_list_but_keeps_k(api: httpx.AsyncClient) -> None:
    relevant = item_ids((await api.get("/recommend/u40", params={"k": 10, "diversity": 1})).json())
    diverse = item_ids((await api.get("/recommend/u40", params={"k": 10, "diversity": 0})).json())
    assert len(diverse) == len(set(diverse)) == 10
    assert relevant[0] == diverse[0]  # MMR always starts from the most relevant item
    assert relevant != diverse


async def test_cold_user_gets_popular_then_trending(
    api: httpx.AsyncClient, redis: RedisClient, service_settings: Settings
) -> None:
    response = await api.get("/recommend/nobody", params={"k": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "popular"
    assert "cold_user" in body["reason"]
    assert len(body["items"]) == 4

    epoch = trending_epoch(time.time(), service_settings.stream_trending_half_life_s)
    shards = service_settings.redis_item_shards
    for item, count in {"d5": 9.0, "c7": 5.0}.items():  # each in its own item shard
        await redis.zadd(keys.trending(keys.item_shard(item, shards), epoch), {item: count})
    body = (await api.get("/recommend/nobody", params={"k": 4})).json()
    assert body["source"] == "trending"
    assert item_ids(body)[:2] == ["d5", "c7"]
    assert [item["source"] for item in body["items"]] == ["trending"] * 2 + ["popular"] * 2
    assert len(set(item_ids(body))) == 4

    comedy = (await api.get("/recommend/nobody", params={"k": 3, "genres": "Comedy"})).json()
    assert item_ids(comedy)[0] == "c7"
    assert all(item["genres"] == ["Comedy"] for item in comedy["items"])


async def test_similar_items_and_unknown_item(api: httpx.AsyncClient) -> None:
    response = await api.get("/items/c1/similar", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 5
    assert "c1" not in item_ids(body)
    assert (await api.get("/items/nope/similar")).status_code == 404


async def test_profile_shows_history_windows_genres_and_vector_freshness(
    api: httpx.AsyncClient, redis: RedisClient, model_version: str
) -> None:
    await write_online_state(redis, model_version, "u5", history=["c1", "c2"])
    profile = (await api.get("/users/u5/profile")).json()
    assert [h["item_id"] for h in profile["history"]] == ["c1", "c2"]
    assert profile["windows"]["5m"]["counts"] == {"click": 2}
    assert list(profile["top_genres"]) == ["Comedy", "Action"]
    assert profile["has_vector"] is True
    assert profile["vector_source"] == "online"
    assert profile["vector_age_s"] >= 0

    batch_only = (await api.get("/users/u6/profile")).json()
    assert batch_only["known"] is False
    assert batch_only["vector_source"] == "batch"
    stranger = (await api.get("/users/stranger/profile")).json()
    assert stranger["has_vector"] is False
    assert stranger["history"] == []


async def test_invalid_parameters_are_422_naming_the_parameter(api: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, float | str], str]] = [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"diversity": 1.5}, "diversity"),
        # Comma-separated values count one by one, not as one parameter.
        ({"exclude_ids": ",".join(f"i{n}" for n in range(1001))}, "exclude_ids"),
        ({"genres": ",".join(f"g{n}" for n in range(101))}, "genres"),
    ]
    for params, field in cases:
        response = await api.get("/recommend/u1", params=params)
        assert response.status_code == 422
        assert [p["field"] for p in response.json()["detail"]] == [field]


async def test_metrics_count_requests_by_route_template(api: httpx.AsyncClient) -> None:
    await api.get("/recommend/u1")
    text = (await api.get("/metrics")).text
    assert (
        'recsys_api_requests_total{method="GET",route="/recommend/{user_id}",status="200"}' in text
    )
    assert 'recsys_api_recommendations_total{source="personalized"}' in text
    assert "recsys_api_mmr_duration_seconds_count" in text
    assert 'recsys_api_backend_duration_seconds_count{backend="qdrant",operation="search"}' in text
