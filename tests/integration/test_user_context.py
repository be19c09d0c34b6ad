"""The API's one-round-trip read of a user (`api.catalog.user_context`) against real Redis."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from api.catalog import VersionHint, user_context
from core import keys
from core.clients import RedisClient
from core.model_version import activate, vector_to_bytes
from core.user_state import HistoryEntry, UserState
from tests.format1 import format1_fields

pytestmark = pytest.mark.integration


async def test_state_version_and_batch_vector_before_and_after_a_version_switch(
    any_redis: RedisClient,
) -> None:
    state = UserState(events=2, last_event_ms=2_000)
    state.recent = state.recent.push(
        [HistoryEntry(2_000, "click", "i2"), HistoryEntry(1_000, "view", "i1")], 10
    )
    await any_redis.set(keys.user_state("ctx-user"), state.encode(3_000))
    await activate(any_redis, "ctx-version")
    batch = np.arange(4, dtype=np.float32)
    await any_redis.hset(
        keys.user_vectors("ctx-version", "ctx-user"), "ctx-user", vector_to_bytes(batch)
    )

    hint = VersionHint()
    for _ in range(2):  # first the version is learnt, then asked for in the same round trip
        context = await user_context(any_redis, "ctx-user", hint)
        assert context.version == "ctx-version"
        assert context.state.history_item_ids == {"i1", "i2"}
        assert context.state.events == 2
        assert context.batch_vector is not None
        np.testing.assert_array_equal(context.batch_vector, batch)
        assert hint.version == "ctx-version"

    stranger = await user_context(any_redis, "nobody", hint)
    assert stranger.state.history == []
    assert stranger.batch_vector is None

    # A new version: the request that sees the switch gets the new version's batch vector.
    await any_redis.hset(
        keys.user_vectors("ctx-next", "ctx-user"), "ctx-user", vector_to_bytes(batch + 1)
    )
    await activate(any_redis, "ctx-next")
    context = await user_context(any_redis, "ctx-user", hint)
    assert context.version == "ctx-next"
    assert context.batch_vector is not None
    np.testing.assert_array_equal(context.batch_vector, batch + 1)
    assert hint.version == "ctx-next"


async def test_a_connection_the_server_closed_is_replaced(redis: aioredis.Redis) -> None:
    await activate(redis, "ctx-version")
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"
    # Every connection the client holds, pooled and idle, is closed by the server (as after
    # a Redis restart or an idle timeout); the next read must not fail because of it.
    own_id = await redis.client_id()
    await redis.client_kill_filter(_id=str(own_id))
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"


async def test_a_user_still_in_format_1_is_read_until_rewritten(any_redis: RedisClient) -> None:
    history = [HistoryEntry(2_000, "click", "old-2"), HistoryEntry(1_000, "view", "old-1")]
    await any_redis.hset(keys.user_state("f1-user"), mapping=format1_fields(history))
    await activate(any_redis, "f1-version")
    await any_redis.hset(
        keys.user_vectors("f1-version", "f1-user"), "f1-user", vector_to_bytes(np.ones(4))
    )
    hint = VersionHint()
    for _ in range(2):  # the version learnt, then the batch vector in the same round trip
        context = await user_context(any_redis, "f1-user", hint)
        assert context.state.history == history
        assert context.batch_vector is not None
