"""The per-partition offsets the stream workers have applied, kept in Redis next to the state.

`recsys:stream:applied` maps `topic:partition` to the highest offset whose effect is in Redis
(written in the same script as the state, see `streams.applier`). An event at or below it is a
redelivery and is skipped. That is only true while the topic lives: a topic deleted and created
again restarts its offsets at 0, and every new event would be skipped as a redelivery. After
that, and with the workers stopped, forget the topic's records (`recsys forget-offsets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from core import keys
from core.model_version import as_bytes


async def applied_offsets(redis: aioredis.Redis) -> dict[str, int]:
    """{"topic:partition": offset} as the workers have recorded them."""
    raw = await redis.hgetall(keys.STREAM_APPLIED)
    return {as_bytes(slot).decode(): int(offset) for slot, offset in raw.items()}


async def forget_applied_offsets(redis: aioredis.Redis, topics: Sequence[str]) -> dict[str, int]:
    """Delete the records of every partition of `topics`; returns the ones deleted."""
    wanted = set(topics)
    forgotten = {
        slot: offset
        for slot, offset in (await applied_offsets(redis)).items()
        if slot.rsplit(":", 1)[0] in wanted
    }
    if forgotten:
        await redis.hdel(keys.STREAM_APPLIED, *forgotten)
    return forgotten
