"""The batch applier against a real Redis and a published model version."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from batch.publish import ModelArtifacts, publish
from core import keys
from core.clients import RedisClient
from core.model_version import as_bytes
from core.rules import (
    EVENT_WEIGHTS,
    ema_update,
    fold_in,
    gram_matrix,
    normalize,
    trending_epoch,
    trending_increment,
    window_start,
)
from core.settings import Settings
from core.user_state import UserState, load_state
from core.vectors.edge import EdgeVectorIndex
from schemas import new_event
from streams.applied_offsets import applied_offsets
from streams.applier import BatchApplier, SourcedEvent, UpdateConfig
from streams.model_cache import ModelCache

pytestmark = pytest.mark.integration

DIM = 4
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def redis(any_redis: RedisClient) -> RedisClient:
    """Every test here runs on one Redis and on a Redis Cluster (`any_redis`)."""
    return any_redis


def artifacts(seed: int, trained_until: int) -> ModelArtifacts:
    rng = np.random.default_rng(seed)
    return ModelArtifacts(
        model="als",
        dataset="unit",
        user_ids=np.array(["known"]),
        item_ids=np.array([f"i{i}" for i in range(10)]),
        user_vectors=rng.standard_normal((1, DIM)).astype(np.float32),
        item_vectors=rng.standard_normal((10, DIM)).astype(np.float32),
        item_payloads=[
            {"title": f"I{i}", "genres": ["Drama" if i < 5 else "Comedy"], "year": None}
            for i in range(10)
        ],
        popularity=np.ones(10, dtype=np.int64),
        trained_until=trained_until,
        params={"alpha": 2.0, "regularization": 0.1},
    )


async def publish_model(
    redis: RedisClient, tmp_path: Path, seed: int = 0, trained_until: int = 0
) -> ModelArtifacts:
    art = artifacts(seed, trained_until)
    index = EdgeVectorIndex(tmp_path / "qdrant")
    await publish(art, index, redis, tmp_path / "models")
    await index.close()
    return art


def sourced(
    event_type: str, user: str, item: str, offset: int, minutes: float = 0, partition: int = 0
) -> SourcedEvent:
    event = new_event(event_type, user, item, ts=T0 + timedelta(minutes=minutes))  # type: ignore[arg-type]
    return SourcedEvent(event, f"events.{event_type}", partition, offset)


# The online vector is stored as float16 (`core.user_state`): half a unit in the last place.
STORED_TOLERANCE = 1e-3


def config(**overrides: object) -> UpdateConfig:
    return UpdateConfig.from_settings(Settings(**overrides))  # type: ignore[arg-type]


async def user_state(redis: RedisClient, user: str) -> UserState:
    return await load_state(redis, user)


async def trending_top(redis: RedisClient, epoch: int, shards: int) -> list[bytes]:
    """The item with the highest decayed count in `epoch`, over every item shard."""
    best: list[Any] = []
    for shard in range(shards):
        best += await redis.zrevrange(keys.trending(shard, epoch), 0, 0, withscores=True)
    return [max(best, key=lambda pair: pair[1])[0]] if best else []


async def test_ema_history_windows_trending_for_a_known_user(
    redis: RedisClient, tmp_path: Path
) -> None:
    art = await publish_model(redis, tmp_path)
    cfg = config()
    applier = BatchApplier(redis, cfg)
    model = await ModelCache(redis).get()
    batch = [
        sourced("view", "known", "i1", 0),
        sourced("purchase", "known", "i2", 0, minutes=1, partition=1),
        sourced("click", "new-user", "i7", 1, minutes=2),
    ]
    outcome = await applier.apply(batch, model)
    assert outcome.applied == {"view": 1, "purchase": 1, "click": 1}

    expected = normalize(art.user_vectors[0])
    expected = ema_update(expected, art.item_vectors[1], cfg.ema_weights["view"])
    expected = ema_update(expected, art.item_vectors[2], cfg.ema_weights["purchase"])
    state = await user_state(redis, "known")
    assert state.vector is not None
    np.testing.assert_allclose(state.vector, expected, rtol=STORED_TOLERANCE, atol=STORED_TOLERANCE)
    assert state.events == 2
    window_5m = state.windows["5m"]
    assert window_5m is not None
    assert window_5m.counts == {"view": 1, "purchase": 1}
    assert state.genres == {"Drama": pytest.approx(5.0, rel=1e-3)}  # view 1 + purchase 4

    newcomer = await user_state(redis, "new-user")
    assert newcomer.vector is not None
    np.testing.assert_allclose(
        newcomer.vector,
        normalize(art.item_vectors[7]),
        rtol=STORED_TOLERANCE,
        atol=STORED_TOLERANCE,
    )

    history = (await user_state(redis, "known")).history
    assert [(h.event_type, h.item_id) for h in history] == [("purchase", "i2"), ("view", "i1")]
    window = keys.item_window(keys.item_shard("i7", cfg.item_shards), "5m", int(T0.timestamp()))
    assert await redis.hget(window, "click:i7") == b"1"
    epoch = trending_epoch(T0.timestamp(), cfg.trending_half_life_s)
    top = await trending_top(redis, epoch, cfg.item_shards)
    assert top == [b"i2"]  # a purchase outweighs a view and a click
    assert await redis.ttl(keys.user_state("known")) > 0


async def test_redelivered_and_duplicate_events_change_nothing(
    redis: RedisClient, tmp_path: Path
) -> None:
    await publish_model(redis, tmp_path)
    applier = BatchApplier(redis, config())
    model = await ModelCache(redis).get()
    first = [sourced("view", "u", "i1", 10), sourced("click", "u", "i2", 11, minutes=1)]
    await applier.apply(first, model)
    before = await redis.get(keys.user_state("u"))

    again = await applier.apply(first, model)  # a redelivery after a crash: same offsets
    assert (again.redelivered, sum(again.applied.values())) == (2, 0)
    republished = SourcedEvent(first[0].event, "events.view", 0, 12)  # same event id, new offset
    dup = await applier.apply([republished, republished], model)
    assert (dup.duplicates, sum(dup.applied.values())) == (2, 0)

    after = await redis.get(keys.user_state("u"))
    assert after == before  # not even rewritten
    assert len((await user_state(redis, "u")).history) == 2
    # The user records the offsets it applied; the item shards also passed the duplicate's.
    assert (await user_state(redis, "u")).offsets == {"v:0": 10, "c:0": 11}
    shards = applier.config.item_shards
    assert await applied_offsets(redis, shards) == {"events.view:0": 12, "events.click:0": 11}


async def test_a_new_model_version_rebases_the_user_on_its_batch_vector(
    redis: RedisClient, tmp_path: Path
) -> None:
    await publish_model(redis, tmp_path, seed=0)
    cfg = config()
    applier = BatchApplier(redis, cfg)
    cache = ModelCache(redis, refresh_s=0)
    before_cutoff = sourced("view", "known", "i1", 0, minutes=-60)
    after_cutoff = sourced("click", "known", "i3", 1, minutes=0)
    await applier.apply([before_cutoff, after_cutoff], await cache.get())

    cutoff = int((T0 - timedelta(minutes=30)).timestamp())
    art2 = await publish_model(redis, tmp_path, seed=1, trained_until=cutoff)
    model2 = await cache.get()
    assert model2 is not None
    assert model2.meta.trained_until == cutoff
    await applier.apply([sourced("view", "known", "i4", 2, minutes=1)], model2)

    expected = normalize(art2.user_vectors[0])  # the new batch vector, then only post-cutoff events
    expected = ema_update(expected, art2.item_vectors[3], cfg.ema_weights["click"])
    expected = ema_update(expected, art2.item_vectors[4], cfg.ema_weights["view"])
    state = await user_state(redis, "known")
    assert state.vector_is_of(model2.version)
    assert state.vector is not None
    np.testing.assert_allclose(state.vector, expected, rtol=STORED_TOLERANCE, atol=STORED_TOLERANCE)


async def test_fold_in_mode_solves_against_the_item_factors(
    redis: RedisClient, tmp_path: Path
) -> None:
    art = await publish_model(redis, tmp_path)
    applier = BatchApplier(redis, config(stream_user_update="fold-in", stream_fold_in_prior=0.0))
    model = await ModelCache(redis).get()
    await applier.apply(
        [sourced("purchase", "fresh", "i5", 0), sourced("view", "fresh", "i6", 1)], model
    )
    state = await user_state(redis, "fresh")
    expected = fold_in(
        gram_matrix(art.item_vectors), art.item_vectors[[5, 6]], np.array([2.0 * 4, 2.0 * 1]), 0.1
    )
    assert state.vector is not None
    np.testing.assert_allclose(state.vector, expected, rtol=STORED_TOLERANCE, atol=STORED_TOLERANCE)
    payload = json.loads(as_bytes(await redis.hget(keys.item_payloads(model.version), "i5")))  # type: ignore[union-attr]
    assert payload["genres"] == ["Comedy"]


async def test_forgetting_a_recreated_topics_offsets_lets_its_new_events_apply(
    redis: RedisClient, tmp_path: Path, topology_settings: Settings
) -> None:
    await publish_model(redis, tmp_path)
    applier = BatchApplier(redis, config())
    model = await ModelCache(redis).get()
    await applier.apply(
        [sourced("view", "u", "i1", 10), sourced("click", "u", "i2", 11, minutes=1)], model
    )
    # events.view deleted and created again: its offsets start from 0 again.
    recreated = [sourced("view", "u", "i3", 3, minutes=2)]
    assert (await applier.apply(recreated, model)).redelivered == 1

    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", "forget-offsets", "--topic", "events.view", "--yes",
        env={
            **os.environ,
            "RECSYS_REDIS_URL": topology_settings.redis_url,
            "RECSYS_REDIS_CLUSTER": str(topology_settings.redis_cluster).lower(),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), timeout=60)
    assert command.returncode == 0, printed.decode()
    assert b"events.view:0  applied up to offset 10" in printed

    assert await applied_offsets(redis, applier.config.item_shards) == {"events.click:0": 11}
    assert (await user_state(redis, "u")).offsets == {"c:0": 11}
    outcome = await applier.apply(recreated, model)
    assert (outcome.redelivered, sum(outcome.applied.values())) == (0, 1)
    assert [e.item_id for e in (await user_state(redis, "u")).history] == ["i3", "i2", "i1"]


async def test_a_user_whose_events_arrive_on_two_partitions_gets_each_once(
    redis: RedisClient, tmp_path: Path
) -> None:
    """A producer with another partitioner spreads one user over partitions 0 and 1; each
    partition's redelivery is recognised by the user's own record of that partition."""
    await publish_model(redis, tmp_path)
    applier = BatchApplier(redis, config())
    model = await ModelCache(redis).get()
    on_0 = [sourced("view", "split", "i1", 40, partition=0), sourced("view", "split", "i2", 41)]
    on_1 = [sourced("view", "split", "i3", 7, minutes=1, partition=1)]
    first = await applier.apply([on_0[0], on_1[0]], model)
    assert sum(first.applied.values()) == 2
    # Partition 0 redelivers from offset 40 after a crash; partition 1 moves on to offset 8.
    later = [sourced("view", "split", "i4", 8, minutes=2, partition=1)]
    second = await applier.apply([*on_0, *later], model)
    assert (second.redelivered, sum(second.applied.values())) == (1, 2)
    state = await user_state(redis, "split")
    assert state.events == 4
    assert sorted(e.item_id for e in state.history) == ["i1", "i2", "i3", "i4"]
    assert state.offsets == {"v:0": 41, "v:1": 8}
    # Each item shard counted each event once, whatever the redeliveries.
    shards = applier.config.item_shards
    start = window_start(T0.timestamp(), 3600)
    counted = 0
    for item in ("i1", "i2", "i3", "i4"):
        window = keys.item_window(keys.item_shard(item, shards), "1h", start)
        counted += int(await redis.hget(window, f"view:{item}") or 0)
    assert counted == 4


async def transition_counts(
    redis: RedisClient, source: str, shards: int, half_life: float
) -> dict[str, float]:
    """The next items counted from `source` in its shard, in T0's epoch."""
    epoch = trending_epoch(T0.timestamp(), half_life)
    key = keys.item_transitions(keys.item_shard(source, shards), epoch, source)
    pairs: list[Any] = await redis.zrange(key, 0, -1, withscores=True)
    return {as_bytes(member).decode(): float(score) for member, score in pairs}


async def test_transitions_are_counted_once_in_the_shard_of_the_item_left(
    redis: RedisClient, tmp_path: Path
) -> None:
    await publish_model(redis, tmp_path)
    cfg = config(stream_transitions_top_n=50)
    applier = BatchApplier(redis, cfg)
    model = await ModelCache(redis).get()
    await applier.apply([sourced("view", "u", "i1", 0)], model)  # the user's item before
    batch = [
        sourced("click", "u", "i2", 1, minutes=1),
        sourced("dislike", "u", "i5", 0, minutes=2),  # negative feedback: no step, no break
        sourced("purchase", "u", "i3", 0, minutes=3),
        sourced("view", "u", "i3", 2, minutes=4),  # the same item again: no step
    ]
    await applier.apply(batch, model)
    await applier.apply(batch, model)  # redelivered: counted once
    half_life = cfg.transition_half_life_s
    shards = cfg.item_shards

    def decayed(minutes: float, weight: float) -> float:
        return trending_increment((T0 + timedelta(minutes=minutes)).timestamp(), weight, half_life)[
            1
        ]

    assert await transition_counts(redis, "i1", shards, half_life) == pytest.approx(
        {"i2": decayed(1, EVENT_WEIGHTS["click"])}
    )
    assert await transition_counts(redis, "i2", shards, half_life) == pytest.approx(
        {"i3": decayed(3, EVENT_WEIGHTS["purchase"])}
    )
    assert await transition_counts(redis, "i3", shards, half_life) == {}
    assert await transition_counts(redis, "i5", shards, half_life) == {}


async def test_the_transition_table_keeps_only_the_top_next_items(
    redis: RedisClient, tmp_path: Path
) -> None:
    await publish_model(redis, tmp_path)
    cfg = config(stream_transitions_top_n=2)
    applier = BatchApplier(redis, cfg)
    model = await ModelCache(redis).get()
    # Users step from i0 to i1..i6; i6 most often, then i5, then i4...
    batch, offset = [], 0
    for target in range(1, 7):
        for n in range(target):
            user = f"t{target}-{n}"
            batch += [
                sourced("view", user, "i0", offset, minutes=0),
                sourced("view", user, f"i{target}", offset + 1, minutes=1),
            ]
            offset += 2
    await applier.apply(batch, model)
    kept = await transition_counts(redis, "i0", cfg.item_shards, cfg.transition_half_life_s)
    assert len(kept) <= 2 * 2  # trimmed in bulk once past twice the top n
    assert {"i6", "i5"} <= set(kept)
    assert "i1" not in kept
    assert "i2" not in kept


async def test_without_the_transition_table_nothing_is_written_for_it(
    redis: RedisClient, tmp_path: Path
) -> None:
    await publish_model(redis, tmp_path)
    applier = BatchApplier(redis, config(stream_transitions_top_n=0))
    model = await ModelCache(redis).get()
    await applier.apply([sourced("view", "u", "i1", 0), sourced("view", "u", "i2", 1)], model)
    assert [key async for key in redis.scan_iter(match="recsys:{i:*}:next:*")] == []
