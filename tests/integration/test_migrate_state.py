"""`recsys migrate-state`: state written in the layout before Redis Cluster support (one shared
applied-offsets hash, unsharded item counts) is moved into today's layout, in place or into a
Redis Cluster, and today's worker then skips what the old workers had applied."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from api.catalog import VersionHint, trending, user_context
from core import keys
from core.clients import RedisClient
from core.model_version import vector_to_bytes
from core.rules import trending_epoch, window_start
from core.settings import Settings
from core.user_state import HistoryEntry
from streams.applier import BatchApplier
from streams.model_cache import ModelCache
from tests.format1 import format1_fields
from tests.integration.test_stream_applier import T0, config, publish_model, sourced, user_state

pytestmark = pytest.mark.integration

HALF_LIFE_S = Settings().stream_trending_half_life_s


async def write_legacy_state(old: aioredis.Redis) -> None:
    """What the workers before cluster support left: a user applied up to offset 10 of
    events.view partition 0, the shared offsets hash, a trending epoch and a 5-minute window."""
    history = [HistoryEntry(2_000, "click", "i2"), HistoryEntry(1_000, "view", "i1")]
    await old.hset("recsys:user:legacy-user:state", mapping=format1_fields(history))
    await old.expire("recsys:user:legacy-user:state", 3600)
    await old.hset(LEGACY_APPLIED, mapping={"events.view:0": 10, "events.click:0": 11})
    now_epoch = trending_epoch(time.time(), HALF_LIFE_S)
    await old.zadd(f"recsys:trending:{now_epoch}", {"i5": 9.0, "i6": 4.0})
    start = window_start(T0.timestamp(), 300)
    await old.hset(f"recsys:items:5m:{start}", mapping={"view:i5": 3, "click:i6": 1})


LEGACY_APPLIED = "recsys:stream:applied"


async def migrate(settings: Settings, source_url: str | None) -> str:
    env = {
        **os.environ,
        "RECSYS_REDIS_URL": settings.redis_url,
        "RECSYS_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
    }
    args = ["migrate-state", "--yes", *(["--from", source_url] if source_url else [])]
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), timeout=60)
    assert command.returncode == 0, printed.decode()
    return printed.decode()


async def test_the_old_layout_moves_in_place_or_into_a_cluster(
    redis: aioredis.Redis,
    any_redis: RedisClient,
    topology_settings: Settings,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    into_cluster = topology_settings.redis_cluster
    await write_legacy_state(redis)
    printed = await migrate(topology_settings, service_settings.redis_url if into_cluster else None)
    assert "moved 1 users" in printed
    assert "applied offsets of 2 partitions" in printed
    assert await redis.exists("recsys:user:legacy-user:state", LEGACY_APPLIED) == 0
    assert not [key async for key in redis.scan_iter(match="recsys:trending:*")]

    target = any_redis
    moved = await user_state(target, "legacy-user")
    assert [e.item_id for e in moved.history] == ["i2", "i1"]
    assert moved.events == 2
    assert moved.offsets == {"v:0": 10, "c:0": 11}
    assert 0 < await target.ttl(keys.user_state("legacy-user")) <= 3600
    shards = topology_settings.redis_item_shards
    top = await trending(target, HALF_LIFE_S, 2, shards)
    assert [item for item, _ in top] == ["i5", "i6"]
    start = window_start(T0.timestamp(), 300)
    window = keys.item_window(keys.item_shard("i5", shards), "5m", start)
    assert await target.hget(window, "view:i5") == b"3"

    # Today's worker skips what the old one applied, and applies what comes after.
    await publish_model(target, tmp_path)
    applier = BatchApplier(target, config())
    model = await ModelCache(target).get()
    outcome = await applier.apply(
        [sourced("view", "legacy-user", "i1", 10), sourced("view", "legacy-user", "i3", 12)], model
    )
    assert (outcome.redelivered, sum(outcome.applied.values())) == (1, 1)
    assert (await user_state(target, "legacy-user")).events == 3

    # Nothing is left to move the second time.
    assert "nothing to move" in await migrate(
        topology_settings, service_settings.redis_url if into_cluster else None
    )


async def test_format_1_users_are_written_packed_by_the_worker_or_the_command(
    any_redis: RedisClient, topology_settings: Settings, tmp_path: Path
) -> None:
    """Users at today's key still in format 1 (a hash): the worker reads one and its write
    replaces it packed (its change counter checked, then moved on); the command packs the rest
    in place, keeping their expiry."""
    history = [HistoryEntry(2_000, "click", "i2"), HistoryEntry(1_000, "view", "i1")]
    for user in ("f1-active", "f1-idle"):
        fields = format1_fields(history, change=5, offsets={"v:0": 10})
        await any_redis.hset(keys.user_state(user), mapping=fields)
        await any_redis.expire(keys.user_state(user), 3600)

    await publish_model(any_redis, tmp_path)
    applier = BatchApplier(any_redis, config())
    model = await ModelCache(any_redis).get()
    outcome = await applier.apply(
        [sourced("view", "f1-active", "i1", 10), sourced("view", "f1-active", "i3", 11)], model
    )
    assert (outcome.redelivered, sum(outcome.applied.values())) == (1, 1)
    assert await any_redis.type(keys.user_state("f1-active")) == b"string"
    active = await user_state(any_redis, "f1-active")
    assert [e.item_id for e in active.history] == ["i3", "i2", "i1"]
    assert (active.events, active.change) == (3, 6)

    printed = await migrate(topology_settings, None)
    assert "1 rewritten packed" in printed
    assert await any_redis.type(keys.user_state("f1-idle")) == b"string"
    idle = await user_state(any_redis, "f1-idle")
    assert (idle.history, idle.offsets, idle.change) == (history, {"v:0": 10}, 6)
    assert 0 < await any_redis.ttl(keys.user_state("f1-idle")) <= 3600
    assert "nothing to move" in await migrate(topology_settings, None)


async def test_batch_vectors_published_as_one_hash_are_spread_over_the_users_tags(
    any_redis: RedisClient, topology_settings: Settings
) -> None:
    """A version published before the vectors lived in the users' tags: the API still finds the
    active version (from the pointer) but not the vectors; after the command it finds both, in
    one round trip to the user's node."""
    vectors = {f"user-{n}": np.full(4, n, dtype=np.float32) for n in range(50)}
    await any_redis.zadd(keys.MODEL_VERSIONS, {"v-old": 1.0})
    await any_redis.hset(
        "recsys:model:v-old:user_vectors",
        mapping={user: vector_to_bytes(vector) for user, vector in vectors.items()},
    )
    await any_redis.set(keys.ACTIVE_MODEL, "v-old")
    before = await user_context(any_redis, "user-7", VersionHint())
    assert (before.version, before.batch_vector) == ("v-old", None)

    assert "batch vectors of 1 model versions spread" in await migrate(topology_settings, None)
    assert await any_redis.exists("recsys:model:v-old:user_vectors") == 0
    hint = VersionHint()
    for user, vector in vectors.items():
        context = await user_context(any_redis, user, hint)
        assert context.version == "v-old"
        assert context.batch_vector is not None
        assert context.batch_vector.tolist() == vector.tolist()
    assert await any_redis.get(keys.active_model_near("user-7")) == b"v-old"
