"""The API's one-round-trip read of a user (`api.catalog.user_context`) against real Redis."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from api.catalog import VersionHint, user_context
from core import keys
from core.model_version import vector_to_bytes
from core.user_state import HistoryEntry, UserState, push_history

pytestmark = pytest.mark.integration


async def test_state_version_and_batch_vector_before_and_after_a_version_switch(
    redis: aioredis.Redis,
) -> None:
    state = UserState(events=2, last_event_ms=2_000)
    state.history_raw = push_history(
        b"", [HistoryEntry(2_000, "click", "i2"), HistoryEntry(1_000, "view", "i1")], 10
    )
    flat_fields = [x for pair in state.to_hash(3_000).items() for x in pair]
    await redis.hset(keys.user_state("ctx-user"), items=flat_fields)
    await redis.set(keys.ACTIVE_MODEL, "ctx-version")
    batch = np.arange(4, dtype=np.float32)
    await redis.hset(keys.user_vectors("ctx-version"), "ctx-user", vector_to_bytes(batch))

    hint = VersionHint()
    for _ in range(2):  # first the version is learnt, then asked for in the same round trip
        context = await user_context(redis, "ctx-user", hint)
        assert context.version == "ctx-version"
        assert context.state.history_item_ids == {"i1", "i2"}
        assert context.state.events == 2
        assert context.batch_vector is not None
        np.testing.assert_array_equal(context.batch_vector, batch)
        assert hint.version == "ctx-version"

    stranger = await user_context(redis, "nobody", hint)
    assert stranger.state.history == []
    assert stranger.batch_vector is None

    # A new version: the request that sees the switch gets the new version's batch vector.
    await redis.hset(keys.user_vectors("ctx-next"), "ctx-user", vector_to_bytes(batch + 1))
    await redis.set(keys.ACTIVE_MODEL, "ctx-next")
    context = await user_context(redis, "ctx-user", hint)
    assert context.version == "ctx-next"
    assert context.batch_vector is not None
    np.testing.assert_array_equal(context.batch_vector, batch + 1)
    assert hint.version == "ctx-next"


async def test_a_connection_the_server_closed_is_replaced(redis: aioredis.Redis) -> None:
    await redis.set(keys.ACTIVE_MODEL, "ctx-version")
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"
    # Every connection the client holds, pooled and idle, is closed by the server (as after
    # a Redis restart or an idle timeout); the next read must not fail because of it.
    own_id = await redis.client_id()
    await redis.client_kill_filter(_id=str(own_id))
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"
    assert (await user_context(redis, "u1", VersionHint())).version == "ctx-version"
