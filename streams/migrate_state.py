"""Move the stream's state from the layout before Redis Cluster support into today's layout
(`core.keys`), on the same Redis or from a single Redis into a cluster (`recsys migrate-state`).

The earlier layout kept each user's state in `recsys:user:<id>:state`, the partitions' applied
offsets in one shared hash `recsys:stream:applied`, and the item counts in one key per window and
per trending epoch. Here each user's hash is copied to `recsys:{u<t>}:<id>:state` with the shared
offsets recorded in it (every event at or below them had been applied to every user), and the
item counts are added into their item shards, which record the same offsets. So a worker of
today's code skips the redeliveries of what the old workers applied, exactly as before.

Run it with the workers stopped (they would write users it has not reached yet). A user whose
new key already exists keeps it (the old copy is dropped), so running it twice changes nothing;
item counts are added, so a run interrupted between adding a key's counts and deleting it would
count that key twice if run again: trending and windows are short-lived (hours), and the summary
says which keys were moved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from core import keys
from core.clients import RedisClient
from core.model_version import as_bytes

LEGACY_USER_STATE = "recsys:user:*:state"
LEGACY_APPLIED = "recsys:stream:applied"
LEGACY_TRENDING = "recsys:trending:*"
LEGACY_WINDOWS = "recsys:items:*:*"
_LEGACY_USER = re.compile(r"^recsys:user:(.+):state$", re.S)
_LEGACY_TRENDING = re.compile(r"^recsys:trending:(-?\d+)$")
_LEGACY_WINDOW = re.compile(r"^recsys:items:([^:]+):(\d+)$")
_CHUNK = 500


@dataclass
class MigrationSummary:
    users: int = 0
    users_already_there: int = 0
    trending_keys: int = 0
    window_keys: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        return bool(self.users or self.users_already_there or self.trending_keys
                    or self.window_keys or self.offsets)  # fmt: skip


async def migrate_state(
    source: RedisClient,
    target: RedisClient,
    item_shards: int,
    progress: Callable[[str, int], None] = lambda stage, done: None,
) -> MigrationSummary:
    """Move every legacy key of `source` into today's layout in `target` (they may be the same
    client); returns what was moved. Legacy keys are deleted once copied."""
    summary = MigrationSummary()
    raw_offsets = await source.hgetall(LEGACY_APPLIED)
    for raw_slot, raw_offset in raw_offsets.items():
        topic, _, partition = as_bytes(raw_slot).decode().rpartition(":")
        summary.offsets[keys.offset_slot(topic, int(partition))] = int(raw_offset)
    await _migrate_users(source, target, summary, progress)
    await _migrate_item_counts(source, target, item_shards, summary, progress)
    if summary.offsets:
        async with target.pipeline(transaction=False) as pipe:
            for shard in range(item_shards):
                pipe.hset(
                    keys.shard_applied(shard),
                    items=[x for slot, offset in summary.offsets.items() for x in (slot, offset)],
                )
            await pipe.execute()
    await source.delete(LEGACY_APPLIED)
    return summary


async def _migrate_users(
    source: RedisClient,
    target: RedisClient,
    summary: MigrationSummary,
    progress: Callable[[str, int], None],
) -> None:
    chunk: list[bytes] = []
    async for key in source.scan_iter(match=LEGACY_USER_STATE, count=1000):
        chunk.append(as_bytes(key))
        if len(chunk) >= _CHUNK:
            await _move_users(source, target, chunk, summary)
            progress("users", summary.users + summary.users_already_there)
            chunk = []
    await _move_users(source, target, chunk, summary)
    progress("users", summary.users + summary.users_already_there)


async def _move_users(
    source: RedisClient, target: RedisClient, old_keys: list[bytes], summary: MigrationSummary
) -> None:
    if not old_keys:
        return
    users = [_LEGACY_USER.match(key.decode()) for key in old_keys]
    pairs = [(old, m.group(1)) for old, m in zip(old_keys, users, strict=True) if m]
    async with source.pipeline(transaction=False) as pipe:
        for old, _ in pairs:
            pipe.hgetall(old)
            pipe.pttl(old)
        read = await pipe.execute()
    async with target.pipeline(transaction=False) as pipe:
        for _, user in pairs:
            pipe.exists(keys.user_state(user))
        present = await pipe.execute()
    offsets = orjson.dumps(summary.offsets)
    async with target.pipeline(transaction=False) as pipe:
        for n, (_, user) in enumerate(pairs):
            fields, ttl_ms = read[2 * n], read[2 * n + 1]
            if present[n] or not fields:
                summary.users_already_there += 1
                continue
            new = keys.user_state(user)
            pipe.hset(new, mapping={**fields, b"o": offsets})
            if ttl_ms > 0:
                pipe.pexpire(new, ttl_ms)
            summary.users += 1
        await pipe.execute()
    await source.delete(*[old for old, _ in pairs])


def _decoded(pairs: Any) -> list[tuple[str, Any]]:
    """(member or field, value) pairs as Redis returns them, the names decoded."""
    return [(as_bytes(name).decode(), value) for name, value in pairs]


async def _write_sharded(
    target: RedisClient,
    entries: Sequence[tuple[str, str, float]],
    ttl_ms: int,
    increment: str,
) -> None:
    """Add one old key's entries, (shard key of today's layout, member or field, amount), to
    those keys (`increment`: ZINCRBY for a sorted set, HINCRBY for a hash), each new key keeping
    the old key's time to live."""
    async with target.pipeline(transaction=False) as pipe:
        touched: set[str] = set()
        for new, name, amount in entries:
            touched.add(new)
            if increment == "ZINCRBY":
                pipe.zincrby(new, amount, name)
            else:
                pipe.hincrby(new, name, int(amount))
        if ttl_ms > 0:
            for new in touched:
                pipe.pexpire(new, ttl_ms)
        await pipe.execute()


async def _migrate_item_counts(
    source: RedisClient,
    target: RedisClient,
    shards: int,
    summary: MigrationSummary,
    progress: Callable[[str, int], None],
) -> None:
    async for raw_key in source.scan_iter(match=LEGACY_TRENDING, count=1000):
        key = as_bytes(raw_key).decode()
        match = _LEGACY_TRENDING.match(key)
        if not match:
            continue
        epoch = int(match.group(1))
        members: list[Any] = await source.zrange(key, 0, -1, withscores=True)
        ttl_ms = await source.pttl(key)
        scores = [
            (keys.trending(keys.item_shard(item, shards), epoch), item, float(score))
            for item, score in _decoded(members)
        ]
        await _write_sharded(target, scores, ttl_ms, "ZINCRBY")
        await source.delete(key)
        summary.trending_keys += 1
        progress("trending", summary.trending_keys)
    async for raw_key in source.scan_iter(match=LEGACY_WINDOWS, count=1000):
        key = as_bytes(raw_key).decode()
        match = _LEGACY_WINDOW.match(key)
        if not match:
            continue
        window, start = match.group(1), int(match.group(2))
        counts = await source.hgetall(key)
        ttl_ms = await source.pttl(key)
        # Fields are "{type}:{item_id}": the item decides the shard.
        fields = [
            (keys.item_window(keys.item_shard(name.split(":", 1)[1], shards), window, start),
             name, int(count))
            for name, count in _decoded(counts.items())
        ]  # fmt: skip
        await _write_sharded(target, fields, ttl_ms, "HINCRBY")
        await source.delete(key)
        summary.window_keys += 1
        progress("windows", summary.window_keys)
