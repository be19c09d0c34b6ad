"""Move the stream's state from the layout before Redis Cluster support into today's layout
(`core.keys`), on the same Redis or from a single Redis into a cluster (`recsys migrate-state`).

The earlier layout kept each user's state in `recsys:user:<id>:state`, the partitions' applied
offsets in one shared hash `recsys:stream:applied`, and the item counts in one key per window and
per trending epoch. Here each user's hash is copied to `recsys:{u<t>}:<id>:state` with the shared
offsets recorded in it (every event at or below them had been applied to every user), and the
item counts are added into their item shards, which record the same offsets. So a worker of
today's code skips the redeliveries of what the old workers applied, exactly as before.
Users are written in today's state format (packed, `core.user_state`), and users already at the
new key but still in format 1 (a hash) are rewritten packed. Kept model versions whose batch user
vectors are one hash of every user get them spread over the users' hash tags, and the active
version's copy is written into each tag (`core.model_version.activate`).

Run it with the workers stopped (they would write users it has not reached yet). A user whose
new key already exists keeps it (the old copy is dropped), so running it twice changes nothing;
item counts are added, so a run interrupted between adding a key's counts and deleting it would
count that key twice if run again: trending and windows are short-lived (hours), and the summary
says which keys were moved.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.typing import EncodableT, FieldT

from core import keys
from core.clients import RedisClient
from core.model_version import activate, active_version, as_bytes, listed_versions
from core.user_state import UserState

LEGACY_USER_STATE = "recsys:user:*:state"
LEGACY_APPLIED = "recsys:stream:applied"
LEGACY_TRENDING = "recsys:trending:*"
LEGACY_WINDOWS = "recsys:items:*:*"
LEGACY_USER_VECTORS = "recsys:model:{version}:user_vectors"
_LEGACY_USER = re.compile(r"^recsys:user:(.+):state$", re.S)
_LEGACY_TRENDING = re.compile(r"^recsys:trending:(-?\d+)$")
_LEGACY_WINDOW = re.compile(r"^recsys:items:([^:]+):(\d+)$")
_CHUNK = 500


@dataclass
class MigrationSummary:
    users: int = 0
    users_already_there: int = 0
    users_packed: int = 0
    # Versions whose batch user vectors were one hash, now spread over the users' tags.
    vector_versions: int = 0
    trending_keys: int = 0
    window_keys: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def anything(self) -> bool:
        return bool(self.users or self.users_already_there or self.users_packed
                    or self.vector_versions or self.trending_keys or self.window_keys
                    or self.offsets)  # fmt: skip


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
    await _pack_users(target, summary, progress)
    summary.vector_versions = await _spread_batch_vectors(target, progress)
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


async def _spread_batch_vectors(target: RedisClient, progress: Callable[[str, int], None]) -> int:
    """Move each kept version's batch user vectors from the one hash of every user they were
    published in (`recsys:model:<v>:user_vectors`) into the users' hash tags, and write the
    active version's copies there (`core.model_version.activate`); returns the versions moved."""
    moved = 0
    for version, _ in await listed_versions(target):
        old = LEGACY_USER_VECTORS.format(version=version)
        if not await target.exists(old):
            continue
        chunk: dict[str, bytes] = {}
        async for user, vector in target.hscan_iter(old, count=_CHUNK):
            chunk[as_bytes(user).decode()] = as_bytes(vector)
            if len(chunk) >= _CHUNK:
                await _write_batch_vectors(target, version, chunk)
                chunk = {}
        await _write_batch_vectors(target, version, chunk)
        await target.unlink(old)
        moved += 1
        progress("batch vectors", moved)
    active = await active_version(target)
    if active is not None:
        await activate(target, active)
    return moved


async def _write_batch_vectors(
    target: RedisClient, version: str, vectors: dict[str, bytes]
) -> None:
    by_key: dict[str, dict[FieldT, EncodableT]] = {}
    for user, vector in vectors.items():
        by_key.setdefault(keys.user_vectors(version, user), {})[user] = vector
    async with target.pipeline(transaction=False) as pipe:
        for key, mapping in by_key.items():
            pipe.hset(key, mapping=mapping)
        await pipe.execute()


async def _pack_users(
    target: RedisClient, summary: MigrationSummary, progress: Callable[[str, int], None]
) -> None:
    """Rewrite the users still in state format 1 (a hash) packed, in place."""
    chunk: list[bytes] = []
    async for key in target.scan_iter(match=keys.user_state_pattern(), count=1000, _type="HASH"):
        chunk.append(as_bytes(key))
        if len(chunk) >= _CHUNK:
            summary.users_packed += await _pack(target, chunk)
            progress("packed", summary.users_packed)
            chunk = []
    summary.users_packed += await _pack(target, chunk)
    progress("packed", summary.users_packed)


async def _pack(target: RedisClient, state_keys: list[bytes]) -> int:
    async with target.pipeline(transaction=False) as pipe:
        for key in state_keys:
            pipe.hgetall(key)
            pipe.pttl(key)
        read = await pipe.execute()
    now_ms = int(time.time() * 1000)
    async with target.pipeline(transaction=False) as pipe:
        for n, key in enumerate(state_keys):
            fields, ttl_ms = read[2 * n], read[2 * n + 1]
            if fields:  # gone since the scan: nothing to rewrite
                state = UserState.from_legacy_hash(fields)
                packed = state.encode(state.updated_ms or now_ms)
                pipe.set(key, packed, px=ttl_ms if ttl_ms > 0 else None)
        await pipe.execute()
    return sum(1 for n in range(len(state_keys)) if read[2 * n])


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
    now_ms = int(time.time() * 1000)
    async with target.pipeline(transaction=False) as pipe:
        for n, (_, user) in enumerate(pairs):
            fields, ttl_ms = read[2 * n], read[2 * n + 1]
            if present[n] or not fields:
                summary.users_already_there += 1
                continue
            state = UserState.from_legacy_hash(fields)
            state.offsets = dict(summary.offsets)
            packed = state.encode(state.updated_ms or now_ms)
            pipe.set(keys.user_state(user), packed, px=ttl_ms if ttl_ms > 0 else None)
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
