"""GET /recommend through the two-stage path (`api.pipeline`) of a version published with its
ranking parts: ranked answers that keep the filters, explanations that name the source and the
strongest features, and the source order with a reason when the ranker is off, missing, of
another feature list, or failing."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from api.catalog import item_stream_reads
from api.item_table import load_item_table
from api.main import create_app
from batch.models.base import build_train_data
from batch.publish import ModelArtifacts
from batch.ranking.train import RANKER_PARAMS, TrainingRows, fit_ranker, item_neighbours
from batch.train import catalog_of
from core import experiment_store, keys
from core.experiments import Arm, Experiment
from core.model_version import as_bytes
from core.ranking import FEATURE_VERSION, FEATURES, SOURCES, Ranker
from core.ranking_store import RankingParts
from core.rules import WINDOWS, trending_epoch, window_start
from core.user_state import UserState
from tests.integration.conftest import ApiSettings, Published, Serve, publish_model, taste_dataset

pytestmark = pytest.mark.integration


def learned_ranker() -> str:
    """A ranker that prefers what the user's vector is most like (user_similarity)."""
    rng = np.random.default_rng(5)
    features = rng.random((800, len(FEATURES))).astype(np.float32)
    labels = np.zeros(800, dtype=np.int32)
    similarity = features[:, FEATURES.index("user_similarity")]
    for group in range(80):
        labels[group * 10 + int(np.argmax(similarity[group * 10 : (group + 1) * 10]))] = 1
    rows = TrainingRows(features, labels, np.full(80, 10), 80, 80)
    return fit_ranker(
        rows, RANKER_PARAMS | {"n_estimators": 30, "min_data_in_leaf": 5, "negative_rate": 1.0}
    )


def with_ranking(artifacts: ModelArtifacts, ranker: str | None, version: int) -> ModelArtifacts:
    dataset = taste_dataset()
    data = build_train_data(dataset.interactions, catalog_of(dataset), dataset.items, None)
    parts = RankingParts(ranker, version, item_neighbours(data, 10, 2.0))
    return replace(artifacts, ranking=parts)


async def publish_ranked(
    redis: aioredis.Redis,
    taste_model: ModelArtifacts,
    root: Path,
    ranker: str | None = "learned",
    version: int = FEATURE_VERSION,
) -> Published:
    text = learned_ranker() if ranker == "learned" else ranker
    return await publish_model(with_ranking(taste_model, text, version), redis, root)  # fmt: skip


def ids(body: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in body["items"]]


async def test_a_ranked_answer_keeps_the_filters_and_explains_itself(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path,
) -> None:  # fmt: skip
    await publish_ranked(redis, taste_model, tmp_path)
    async with serve(create_app(make_api_settings())) as api:
        body = (
            await api.get("/recommend/u3", params={"k": 8, "explain": "true", "diversity": 1.0})
        ).json()
        assert body["source"] == "ranked"
        assert "ranker" not in (body.get("reason") or "")
        assert len(body["items"]) == 8
        assert {item["source"] for item in body["items"]} <= set(SOURCES)
        scores = [item["score"] for item in body["items"]]
        assert scores == sorted(scores, reverse=True)  # in the ranker's order
        assert all(item["features"] for item in body["items"][:3])
        assert {f["feature"] for item in body["items"] for f in item["features"] or []} <= set(
            FEATURES
        )
        # u3 watched comedies: its history in the model is excluded like any seen item.
        first = ids(body)
        filtered = (
            await api.get(
                "/recommend/u3",
                params={"k": 8, "exclude_ids": ",".join(first[:2]), "genres": "Drama"},
            )
        ).json()
        assert not set(first[:2]) & set(ids(filtered))
        assert all("Drama" in item["genres"] for item in filtered["items"])


async def test_with_the_ranker_off_the_sources_keep_their_order_and_say_so(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path,
) -> None:  # fmt: skip
    await publish_ranked(redis, taste_model, tmp_path)
    async with serve(create_app(make_api_settings(api_ranker="off"))) as api:
        body = (await api.get("/recommend/u3", params={"k": 6, "diversity": 1.0})).json()
        assert body["source"] == "personalized"
        assert "ranker_off" in body["reason"]
        assert body["items"][0]["source"] == "ann"


@pytest.mark.parametrize(
    ("ranker", "version", "reason"),
    [
        (None, FEATURE_VERSION, "no_ranker"),
        ("learned", FEATURE_VERSION - 1, "ranker_mismatch"),
        ("not a model", FEATURE_VERSION, "ranker_unreadable"),
    ],
)
async def test_a_missing_or_unusable_ranker_falls_back_to_source_order(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path, ranker: str | None, version: int, reason: str,
) -> None:  # fmt: skip
    await publish_ranked(redis, taste_model, tmp_path, ranker, version)
    async with serve(create_app(make_api_settings())) as api:
        response = await api.get("/recommend/u40", params={"k": 5})
        assert response.status_code == 200
        body = response.json()
        assert body["source"] == "personalized"
        assert reason in body["reason"]
        assert len(body["items"]) == 5


async def test_a_ranker_that_fails_to_score_leaves_the_source_order(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    await publish_ranked(redis, taste_model, tmp_path)
    async with serve(create_app(make_api_settings())) as api:
        ranked = (await api.get("/recommend/u5", params={"k": 5})).json()
        assert ranked["source"] == "ranked"

        def broken(self: Ranker, features: np.ndarray) -> np.ndarray:
            raise RuntimeError("model went away")

        monkeypatch.setattr(Ranker, "score", broken)
        body = (await api.get("/recommend/u5", params={"k": 5})).json()
        assert body["source"] == "personalized"
        assert "ranker_error" in body["reason"]
        assert len(body["items"]) == 5


async def test_experiment_arms_switch_the_ranker_the_sources_and_the_version(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path,
) -> None:  # fmt: skip
    older = await publish_model(taste_model, redis, tmp_path)
    newer = await publish_ranked(redis, taste_model, tmp_path)
    experiment = Experiment(
        "arms",
        (
            Arm("ranked", 0.25),
            Arm("unranked", 0.25, {"ranker": False}),
            Arm("popular-only", 0.25, {"sources": {"popular": 30}}),
            Arm("older", 0.25, {"version": older.version}),
        ),
    )
    await experiment_store.create(redis, experiment, 1.0)
    async with serve(create_app(make_api_settings())) as api:

        async def answer(variant: str) -> dict[str, Any]:
            params: dict[str, str | int | float] = {"k": 6, "variant": variant, "diversity": 1.0}
            body: dict[str, Any] = (await api.get("/recommend/u3", params=params)).json()
            return body

        ranked, unranked = await answer("ranked"), await answer("unranked")
        popular_only, pinned = await answer("popular-only"), await answer("older")
    assert (ranked["source"], ranked["model_version"]) == ("ranked", newer.version)
    assert "ranker_off" in unranked["reason"]
    assert popular_only["source"] == "ranked"
    assert {item["source"] for item in popular_only["items"]} == {"popular"}
    # The older version has no ranking stage: the one-stage path, on its own vectors.
    assert (pinned["source"], pinned["model_version"]) == ("personalized", older.version)
    stale = Experiment("stale", (Arm("a", 1.0, {"version": "v-gone"}),))
    await experiment_store.stop(redis, "arms", 2.0)
    with pytest.raises(experiment_store.ExperimentConflictError, match="not kept"):
        await experiment_store.create(redis, stale, 3.0)


async def test_the_users_genres_and_the_streams_counts_reach_the_ranking_stage(
    make_api_settings: ApiSettings, serve: Serve, redis: aioredis.Redis,
    taste_model: ModelArtifacts, tmp_path: Path,
) -> None:  # fmt: skip
    await publish_ranked(redis, taste_model, tmp_path)
    now_ms = int(time.time() * 1000)
    # A newcomer the model never saw, whose stream so far says Drama.
    state = UserState(events=3, last_event_ms=now_ms, genres={"Drama": 3.0, "Action": 0.5})
    await redis.set(keys.user_state("newcomer"), state.encode(now_ms))
    settings = make_api_settings(api_ranker="off")
    async with serve(create_app(settings)) as api:
        body = (await api.get("/recommend/newcomer", params={"k": 6, "diversity": 1.0})).json()
    from_genres = [item for item in body["items"] if item["source"] == "genre_popular"]
    assert from_genres, body
    assert all(item["item_id"][0] in "da" for item in from_genres)  # Drama or Action items
    assert from_genres[0]["item_id"].startswith("d")  # the strongest genre's popular first

    # The candidates' stream counts as the worker writes them (`core.keys`).
    now_s = now_ms / 1000
    shards = settings.redis_item_shards
    epoch = trending_epoch(now_s, settings.stream_trending_half_life_s)
    hour = window_start(now_s, WINDOWS["1h"])
    await redis.zincrby(keys.trending(keys.item_shard("d1", shards), epoch), 2.5, "d1")
    window = keys.item_window(keys.item_shard("d1", shards), "1h", hour)
    await redis.hset(window, mapping={"view:d1": 3, "click:d1": 1, "dislike:d1": 7})
    counted = await item_stream_reads(redis, ["c1", "d1"], now_s, settings)
    assert counted.trending.tolist() == [0.0, 2.5]
    assert counted.window_1h.tolist() == [0.0, 4.0]  # views and clicks; a dislike is no interest


async def test_the_tables_popular_list_is_the_versions_popular_set_in_its_order(
    redis: aioredis.Redis, taste_model: ModelArtifacts, tmp_path: Path
) -> None:
    # Ties (equal counts) too: the set orders them by the higher id, as `best_first` does.
    counts = np.array([(n // 3) % 5 for n in range(len(taste_model.item_ids))], dtype=np.int64)
    tied = replace(taste_model, popularity=counts)
    published = await publish_model(with_ranking(tied, None, FEATURE_VERSION), redis, tmp_path)
    table = await load_item_table(redis, published.version)
    assert table is not None
    for limit in (1, 7, len(taste_model.item_ids)):
        stored: list[Any] = await redis.zrevrange(
            keys.popular(published.version), 0, limit - 1, withscores=True
        )
        pairs = [(as_bytes(member).decode(), float(score)) for member, score in stored]
        assert table.top_popular(limit) == pairs
    assert len(table.top_popular(10_000)) == int((counts > 0).sum())
