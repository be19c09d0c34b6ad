"""A batch whose users live on all three shards of a real Redis Cluster, with one shard stopped
in the middle of the batch's writes: after the shard returns and the batch is redelivered,
every event has taken effect exactly once (nothing lost, nothing applied twice)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError

from core import keys
from core.clients import RedisClient, redis_client_for
from core.rules import window_start
from core.settings import Settings
from infra.local.process import free_port_run
from infra.local.redis_cluster import RedisCluster
from streams.applier import BatchApplier, SourcedEvent
from streams.model_cache import ModelCache
from tests.integration.test_stream_applier import T0, config, publish_model, sourced, user_state

pytestmark = pytest.mark.integration

USERS_PER_SHARD = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    # With its append-only file, a stopped node comes back with what it had written.
    local = RedisCluster(tmp_path / "cluster", free_port_run(3, also_at=10_000), appendonly=True)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[RedisClient]:
    redis = redis_client_for(Settings(redis_url=cluster.url, redis_cluster=True))
    yield redis
    await redis.aclose()


def users_by_node(redis: Any, count: int) -> dict[int, list[str]]:
    """`count` user ids whose state lives on each node (by port)."""
    found: dict[int, list[str]] = {}
    n = 0
    while len(found) < 3 or min(map(len, found.values())) < count:
        user = f"user-{n}"
        port = redis.get_node_from_key(keys.user_state(user)).port
        if len(found.setdefault(port, [])) < count:
            found[port].append(user)
        n += 1
    return found


async def until_it_works(apply: Any, timeout_s: float = 30.0) -> Any:
    """Redeliver until the cluster answers again (it needs a few seconds to take the node back)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await apply()
        except RedisError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("stopped_before", ["shard", "write"])
async def test_a_shard_stopped_mid_batch_loses_nothing_and_doubles_nothing(
    cluster: RedisCluster, client: Any, tmp_path: Path, stopped_before: str
) -> None:
    await publish_model(client, tmp_path)
    model = await ModelCache(client).get()
    applier = BatchApplier(client, config())
    placement = users_by_node(client, USERS_PER_SHARD)
    users = [user for group in placement.values() for user in group]
    batch: list[SourcedEvent] = []
    for n, user in enumerate(users):
        batch.append(sourced("view", user, f"i{n % 10}", 2 * n))
        batch.append(sourced("click", user, f"i{(n + 3) % 10}", 2 * n + 1, minutes=1))
    victim_port = next(iter(placement))
    victim = next(node for node in cluster.nodes if node.port == victim_port)

    # The shard goes away just before the item shards' (or the users') calls are sent: the calls
    # to the other shards land, those to the victim fail, and the batch fails.
    run = applier._scripts.run
    stopped: list[bool] = []

    async def stop_first(name: str, calls: Any) -> list[Any]:
        if name == stopped_before and not stopped:
            victim.stop()
            stopped.append(True)
        return await run(name, calls)

    applier._scripts.run = stop_first  # type: ignore[method-assign]
    with pytest.raises(RedisError):
        await applier.apply(batch, model)
    assert stopped
    survivors = [u for port, group in placement.items() if port != victim_port for u in group]
    if stopped_before == "write":  # the other shards' users were written before the failure
        assert all([(await user_state(client, u)).events == 2 for u in survivors])

    victim.start()
    outcome = await until_it_works(lambda: applier.apply(batch, model))
    assert sum(outcome.applied.values()) + outcome.redelivered == len(batch)

    for user in users:
        state = await user_state(client, user)
        assert state.events == 2, user
        assert len(state.history) == 2, user
    # Each event counted once in its item's shard (the 1h window holds all of them).
    shards = applier.config.item_shards
    start = window_start(T0.timestamp(), 3600)
    counted = 0
    for item in {e.item_id for s in batch if (e := s.interaction) is not None}:
        window = keys.item_window(keys.item_shard(item, shards), "1h", start)
        counted += sum(int(v) for v in (await client.hgetall(window)).values())
    assert counted == len(batch)
    # A second redelivery changes nothing.
    again = await applier.apply(batch, model)
    assert (again.redelivered, sum(again.applied.values())) == (len(batch), 0)
