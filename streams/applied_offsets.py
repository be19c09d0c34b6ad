"""The offsets the stream workers have applied, as recorded next to what they wrote.

Each user's state records the last offset applied to that user per topic partition, and each
item shard the last offset it counted (`core.keys`), in the same atomic write as the effect
itself (see `streams.applier`). An event at or below the record is a redelivery and is skipped.
That is only true while the topic lives: a topic deleted and created again restarts its offsets
at 0, and every new event would be skipped as a redelivery. After that, and with the workers
stopped, forget the topic's records (`recsys forget-offsets`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from core import keys
from core.clients import RedisClient
from core.model_version import as_bytes
from core.user_state import load_state, load_states

# State keys read and rewritten per pipeline while forgetting.
_CHUNK = 500


async def applied_offsets(redis: RedisClient, shards: int) -> dict[str, int]:
    """{"topic:partition": the highest offset any item shard has counted}: how far the workers
    have got in each partition."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            pipe.hgetall(keys.shard_applied(shard))
        replies = await pipe.execute()
    highest: dict[str, int] = {}
    for applied in replies:
        for raw_slot, raw_offset in applied.items():
            slot = _readable(as_bytes(raw_slot).decode())
            highest[slot] = max(highest.get(slot, -1), int(raw_offset))
    return highest


async def user_applied_offset(redis: RedisClient, user_id: str, topic: str, partition: int) -> int:
    """The last offset of `topic`'s `partition` applied to the user (-1: none)."""
    offsets = (await load_state(redis, user_id)).offsets
    return int(offsets.get(keys.offset_slot(topic, partition), -1))


async def forget_applied_offsets(
    redis: RedisClient, topics: Sequence[str], shards: int
) -> dict[str, int]:
    """Delete every record of `topics`' partitions, in the item shards and in every user's
    state (a scan of all users); returns the shards' records that were deleted. Run it with the
    workers stopped: a user's state is rewritten without its change counter being checked."""
    wanted = set(topics)
    forgotten = {
        slot: offset
        for slot, offset in (await applied_offsets(redis, shards)).items()
        if slot.rsplit(":", 1)[0] in wanted
    }
    codes = {keys.offset_slot(topic, 0).rsplit(":", 1)[0] for topic in wanted}
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            applied = keys.shard_applied(shard)
            for slot in forgotten:
                topic, partition = slot.rsplit(":", 1)
                pipe.hdel(applied, keys.offset_slot(topic, int(partition)))
        await pipe.execute()
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=keys.user_state_pattern(), count=1000):
        batch.append(as_bytes(key))
        if len(batch) >= _CHUNK:
            await _forget_in_states(redis, batch, codes)
            batch = []
    await _forget_in_states(redis, batch, codes)
    return forgotten


async def _forget_in_states(redis: RedisClient, state_keys: list[bytes], codes: set[str]) -> None:
    if not state_keys:
        return
    states = await load_states(redis, state_keys)
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for key, state in zip(state_keys, states, strict=True):
            if state is None:
                continue
            kept = {s: o for s, o in state.offsets.items() if s.rsplit(":", 1)[0] not in codes}
            if len(kept) != len(state.offsets):
                state.offsets = kept
                pipe.set(key, state.encode(state.updated_ms or now_ms), keepttl=True)
        await pipe.execute()


def _readable(slot: str) -> str:
    """An offset record's name with the topic spelled out ("v:3" -> "events.view:3")."""
    code, partition = slot.rsplit(":", 1)
    return f"{keys.slot_topic(slot)}:{partition}" if code else slot
