"""The API's one-round-trip read of a user (`api.catalog.user_context`) against real Redis."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from api.catalog import user_context
from core import keys
from core.model_version import vector_to_bytes
from core.user_state import HistoryEntry, UserState, push_history

pytestmark = pytest.mark.integration


async def test_state_version_and_batch_vector_in_one_read_even_after_a_script_flush(
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

    for _ in range(2):  # the second time Redis has forgotten the script: it is sent again
        context = await user_context(redis, "ctx-user")
        assert context.version == "ctx-version"
        assert context.state.history_item_ids == {"i1", "i2"}
        assert context.state.events == 2
        assert context.batch_vector is not None
        np.testing.assert_array_equal(context.batch_vector, batch)
        await redis.script_flush()

    stranger = await user_context(redis, "nobody")
    assert stranger.state.history == []
    assert stranger.batch_vector is None


async def test_a_connection_the_server_closed_is_replaced(redis: aioredis.Redis) -> None:
    await redis.set(keys.ACTIVE_MODEL, "ctx-version")
    assert (await user_context(redis, "u1")).version == "ctx-version"
    # Every connection the client holds, pooled and idle, is closed by the server (as after
    # a Redis restart or an idle timeout); the next read must not fail because of it.
    own_id = await redis.client_id()
    await redis.client_kill_filter(_id=str(own_id))
    assert (await user_context(redis, "u1")).version == "ctx-version"
    assert (await user_context(redis, "u1")).version == "ctx-version"
