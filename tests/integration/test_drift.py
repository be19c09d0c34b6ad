"""Drift monitoring end to end on the session's Redis: the baseline published with a version, the
worker's live window, and GET /monitoring/drift with the recsys_drift_psi gauge."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from api.main import create_app
from core import drift, keys
from core.settings import Settings
from schemas.events import new_event
from streams.applier import SourcedEvent
from streams.drift import WorkerDrift
from streams.model_cache import ModelCache
from tests.integration.conftest import ApiSettings, Published, Serve

pytestmark = pytest.mark.integration


async def test_a_published_version_carries_its_drift_baseline(
    redis: aioredis.Redis, published: Published
) -> None:
    raw = await redis.get(keys.drift_baseline(published.version))
    assert raw is not None
    baseline = drift.Baseline.from_json(raw)
    # The taste dataset is of ratings: no live event type to compare its mix with.
    assert set(baseline.distributions) == {
        drift.ITEM_POPULARITY,
        drift.ITEM_GENRES,
        drift.USER_ACTIVITY,
        drift.SERVED_SCORES,
        drift.EVENT_SCORES,
    }
    genres = baseline.distributions[drift.ITEM_GENRES]
    assert set(genres.bins.categories) == {"Action", "Comedy", "Drama"}
    assert baseline.distributions[drift.ITEM_POPULARITY].count == int(
        published.artifacts.popularity.sum()
    )


def events_like(published: Published, n: int, seed: int, shifted: bool) -> list[SourcedEvent]:
    """`n` views of training users: items drawn as training drew them, or (shifted) only the
    least popular items."""
    rng = np.random.default_rng(seed)
    artifacts = published.artifacts
    popularity = artifacts.popularity.astype(np.float64)
    if shifted:
        popularity = np.where(popularity <= np.quantile(popularity[popularity > 0], 0.2), 1.0, 0)
        popularity[artifacts.popularity == 0] = 0
    items = rng.choice(artifacts.item_ids, size=n, p=popularity / popularity.sum())
    users = rng.choice(artifacts.user_ids, size=n)
    return [
        SourcedEvent(new_event("view", str(user), str(item)), "events.view", 0, offset)
        for offset, (user, item) in enumerate(zip(users, items, strict=True))
    ]


async def psi_after(
    worker: WorkerDrift, models: ModelCache, events: list[SourcedEvent], client: httpx.AsyncClient
) -> tuple[float | None, dict[str, Any]]:
    for start in range(0, len(events), 250):
        await worker.observe(events[start : start + 250], models)
    await worker.publish(time.time())
    answer = await client.get("/monitoring/drift")
    assert answer.status_code == 200
    body = answer.json()
    (popularity,) = [d for d in body["distributions"] if d["distribution"] == "item_popularity"]
    return popularity["psi"], body


def gauge(distribution: str) -> float | None:
    return REGISTRY.get_sample_value("recsys_drift_psi", {"distribution": distribution})


async def test_the_drift_gauge_stays_flat_without_a_shift_and_rises_with_one(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    settings: Settings = make_api_settings(
        drift_min_observations=300, drift_publish_interval_s=3600
    )
    worker = WorkerDrift(redis, settings, source="worker:test")
    models = ModelCache(redis, refresh_s=3600)
    async with serve(create_app(settings)) as client:
        first, body = await psi_after(
            worker, models, events_like(published, 1500, 1, False), client
        )
        assert body["model_version"] == published.version
        assert body["threshold"] == settings.drift_psi_threshold
        assert body["live_sources"] == 2  # the worker's window and the API's own
        assert first is not None
        assert first < 0.1
        assert gauge("item_popularity") == pytest.approx(first)
        # The worker also counts its events' genres, as training did: no drift there either.
        (genres,) = [d for d in body["distributions"] if d["distribution"] == "item_genres"]
        assert genres["live_observations"] >= 1500  # every event's item has a genre or two
        assert genres["psi"] < 0.1

        again, _ = await psi_after(worker, models, events_like(published, 1500, 2, False), client)
        assert again is not None
        assert again < 0.1  # flat: more of the same distribution

        shifted, body = await psi_after(
            worker, models, events_like(published, 4500, 3, True), client
        )
        assert shifted is not None
        assert shifted > settings.drift_psi_threshold
        assert shifted > 5 * max(first, again)
        assert body["status"] == "drift"
        assert "item_popularity" in body["detail"]
        assert gauge("item_popularity") == pytest.approx(shifted)
        (popularity,) = [d for d in body["distributions"] if d["distribution"] == "item_popularity"]
        assert sum(b["live"] for b in popularity["bins"]) == pytest.approx(1.0)
        assert sum(b["baseline"] for b in popularity["bins"]) == pytest.approx(1.0)


async def test_the_api_observes_the_scores_it_serves(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    settings = make_api_settings(drift_min_observations=50, drift_publish_interval_s=3600)
    async with serve(create_app(settings)) as client:
        before = (await client.get("/monitoring/drift")).json()
        assert before["status"] == "no_live_data"
        for user in range(10):
            assert (await client.get(f"/recommend/u{user}?k=10")).status_code == 200
        body = (await client.get("/monitoring/drift")).json()
    (scores,) = [d for d in body["distributions"] if d["distribution"] == "served_scores"]
    assert scores["live_observations"] == 100
    # Compared with the version's live reference, which needs a settled window first.
    assert scores["compared_with"] == "awaiting_reference"
    assert scores["status"] == "awaiting_reference"
    assert scores["psi"] is None
    assert await redis.hexists(keys.DRIFT_LIVE, f"api:{socket.gethostname()}:{os.getpid()}")


async def test_a_version_without_a_baseline_reports_so(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    await redis.delete(keys.drift_baseline(published.version))
    async with serve(create_app(make_api_settings())) as client:
        answer = await client.get("/monitoring/drift")
        assert (await client.get("/recommend/u1")).status_code == 200
    assert answer.status_code == 200
    assert answer.json()["status"] == "no_baseline"
    assert answer.json()["distributions"] == []
    assert gauge("item_popularity") is None


def views_of(users: range, prefix: str, per_user: int, seed: int) -> list[Any]:
    """`per_user` views by each of `users` of the taste dataset's items of one genre."""
    rng = np.random.default_rng(seed)
    return [
        new_event("view", f"u{user}", f"{prefix}{rng.integers(20)}")
        for _ in range(per_user)
        for user in users
    ]


async def test_event_scores_fall_when_users_change_taste(
    redis: aioredis.Redis, published: Published, service_settings: Settings
) -> None:
    """Through the real applier: the scores of what users do, against their vectors, stay
    level while they keep their taste and drop when Comedy watchers turn to Drama and Drama
    watchers to Comedy (a shift the overall genre mix does not show: it stays balanced)."""
    from api.drift import DriftMonitor
    from streams.applier import BatchApplier, UpdateConfig

    settings = service_settings.model_copy(
        update={"drift_settle_s": 0.0, "drift_window_s": 60.0, "drift_min_observations": 100}
    )
    applier = BatchApplier(redis, UpdateConfig.from_settings(settings))
    models = ModelCache(redis, refresh_s=3600)
    worker = WorkerDrift(redis, settings, source="worker:test")
    monitor = DriftMonitor(redis, settings)
    start, offset = time.time(), 0

    async def phase(events: list[Any], at: float) -> dict[str, Any]:
        nonlocal offset
        for first in range(0, len(events), 60):  # one view per user per batch, as a stream
            batch = []
            for event in events[first : first + 60]:
                batch.append(SourcedEvent(event, "events.view", 0, offset))
                offset += 1
            outcome = await applier.apply(batch, await models.get())
            await worker.observe(batch, models, outcome.event_scores, now=start + at)
        await worker.publish(start + at)
        found = await monitor.report(now=start + at)
        (scores,) = [d for d in found.distributions if d.distribution == "event_scores"]
        return scores.model_dump()

    kept = [*views_of(range(30), "c", 8, 1), *views_of(range(30, 60), "d", 8, 2)]
    reference = await phase(kept, at=120.0)  # a full window after settling: the reference
    assert reference["compared_with"] == "live_reference"
    assert reference["live_observations"] == 480
    assert reference["psi"] == pytest.approx(0.0, abs=1e-9)
    assert await redis.exists(keys.drift_reference(published.version))

    again = [*views_of(range(30), "c", 8, 3), *views_of(range(30, 60), "d", 8, 4)]
    level = await phase(again, at=240.0)  # the next window: the same tastes
    assert level["psi"] is not None
    # Below the threshold; not zero, as the vectors keep turning towards each user's genre.
    assert level["status"] == "ok"

    turned = [*views_of(range(30), "d", 8, 5), *views_of(range(30, 60), "c", 8, 6)]
    shifted = await phase(turned, at=360.0)
    assert shifted["status"] == "drift"
    assert shifted["psi"] > 10 * max(level["psi"], settings.drift_psi_threshold)
