"""Attribution in the stream, against a real Redis and a Redis Cluster: the worker's applier
credits impressions, clicks and purchases to their arms in the shards' counters, exactly once
when a batch is redelivered, and the report built from those counters says what happened."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from core import experiment_store, keys
from core.clients import RedisClient
from core.experiment_report import build_report
from core.experiments import Arm, Experiment
from core.settings import Settings
from core.user_state import load_state
from schemas import new_event
from schemas.impressions import ImpressedItem, ImpressionEvent, ImpressionRequest
from schemas.topics import IMPRESSION_TOPIC
from streams.applier import BatchApplier, SourcedEvent, UpdateConfig

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EXPERIMENT = Experiment("home", (Arm("model", 0.5), Arm("random", 0.5, {"random": True})))
BUCKET_S = 600


@pytest.fixture
def redis(any_redis: RedisClient) -> RedisClient:
    return any_redis


def impression(
    user: str, variant: str, items: list[str], minutes: float, offset: int
) -> tuple[SourcedEvent, uuid.UUID]:
    rid = uuid.uuid4()
    event = ImpressionEvent(
        recommendation_id=rid,
        user_id=user,
        ts=T0 + timedelta(minutes=minutes),
        source="ranked",
        items=[
            ImpressedItem(item_id=i, position=n, source="ann", score=1.0)
            for n, i in enumerate(items)
        ],
        request=ImpressionRequest(k=len(items), diversity=0.8),
        experiment="home",
        variant=variant,
    )
    return SourcedEvent(event, IMPRESSION_TOPIC, 0, offset), rid


def acted(
    kind: str, user: str, item: str, minutes: float, offset: int, rid: uuid.UUID | None = None
) -> SourcedEvent:
    extra = {"recommendation_id": rid} if rid is not None else {}
    event = new_event(kind, user, item, ts=T0 + timedelta(minutes=minutes), **extra)  # type: ignore[arg-type]
    return SourcedEvent(event, f"events.{kind}", 0, offset)


def applier(redis: RedisClient) -> BatchApplier:
    settings = Settings(experiment_attribution_window_s=1800, experiment_bucket_s=BUCKET_S)
    return BatchApplier(redis, UpdateConfig.from_settings(settings))


async def test_credits_land_in_their_arms_once_and_the_report_reads_them(
    redis: RedisClient,
) -> None:
    await experiment_store.create(redis, EXPERIMENT, T0.timestamp())
    shown_a, rid_a = impression("ann", "model", ["i1", "i2", "i3"], 0, 0)
    shown_b, rid_b = impression("bob", "random", ["i7", "i8"], 0, 1)
    shown_a2, _ = impression("ann", "model", ["i4"], 1, 2)
    first = [
        shown_a,
        shown_b,
        shown_a2,
        acted("click", "ann", "i2", 2, 0, rid_a),
        acted("click", "ann", "i3", 3, 1),  # no id: last touch, the answer that showed i3
        acted("purchase", "ann", "i3", 4, 0),
        acted("click", "bob", "i9", 5, 2),  # never shown to bob: not credited
    ]
    worker = applier(redis)
    outcome = await worker.apply(first, None)
    # The click after the window and one without any impression: nothing is credited.
    second = [
        acted("click", "bob", "i7", 45, 3, rid_b),
        acted("click", "cat", "i1", 46, 4),
    ]
    outcome_late = await worker.apply(second, None)
    assert outcome_late.credited == {}
    # The whole first batch again (a redelivery): counted once.
    again = await worker.apply(first, None)
    assert again.credited == {}

    assert dict(outcome.credited) == {
        ("home", "model", "users"): 1,
        ("home", "model", "impressions"): 2,
        ("home", "model", "clicks"): 2,
        ("home", "model", "clicked_impressions"): 1,
        ("home", "model", "purchases"): 1,
        ("home", "model", "converted_impressions"): 1,
        ("home", "random", "users"): 1,
        ("home", "random", "impressions"): 1,
    }
    counts = await experiment_store.read_counts(redis, "home")
    bucket = int(T0.timestamp()) // BUCKET_S * BUCKET_S
    assert set(counts) == {bucket}
    registered = await experiment_store.registered(redis, "home")
    assert registered is not None
    report = build_report(registered, counts)
    model, random_arm = report["arms"]
    assert model["counts"] == {
        "users": 1, "impressions": 2, "clicked_impressions": 1, "clicks": 2,
        "purchases": 1, "converted_impressions": 1,
    }  # fmt: skip
    assert model["rates"]["ctr"]["value"] == 0.5
    assert random_arm["rates"]["ctr"]["value"] == 0.0
    assert random_arm["rates"]["ctr"]["vs_control"]["difference"] == -0.5
    assert report["control"] == "model"
    # The touches are in the users' states: ann's two answers, bob's one.
    ann = await load_state(redis, "ann")
    assert len(ann.touches.touches) == 2
    # An impression is counted in its user's shard.
    shard = keys.item_shard("bob", UpdateConfig.from_settings(Settings()).item_shards)
    raw = await redis.hgetall(keys.experiment_counts(shard, "home", bucket))
    assert raw[b"random:impressions"] == b"1"


async def test_the_registry_runs_one_experiment_at_a_time(redis: RedisClient) -> None:
    await experiment_store.create(redis, EXPERIMENT, 1.0)
    other = Experiment("search", (Arm("a", 1.0),))
    with pytest.raises(experiment_store.ExperimentConflictError, match="stop home"):
        await experiment_store.create(redis, other, 2.0)
    assert await experiment_store.running(redis) == EXPERIMENT
    await experiment_store.stop(redis, "home", 3.0)
    assert await experiment_store.running(redis) is None
    with pytest.raises(experiment_store.ExperimentConflictError, match="exists already"):
        await experiment_store.create(redis, EXPERIMENT, 4.0)
    # A configured experiment that an operator stopped is not started again by a restart.
    assert await experiment_store.register_configured(redis, EXPERIMENT, 5.0) == "known"
    assert await experiment_store.register_configured(redis, other, 6.0) == "started"
    listed = await experiment_store.all_registered(redis)
    assert [(r.experiment.id, r.running) for r in listed] == [("search", True), ("home", False)]
