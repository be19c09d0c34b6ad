"""Redis reads the API makes about items and users (key layout in `core.keys`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core import keys
from core.clients import RedisClient
from core.model_version import as_bytes, vector_from_bytes
from core.ranking import best_first, merge_epochs, window_fields
from core.rules import PREVIOUS_EPOCH_WEIGHT, WINDOWS, trending_epoch, window_start
from core.settings import Settings
from core.user_state import LEGACY_FIELDS, UserState, is_wrong_type


@dataclass(frozen=True)
class Candidate:
    """An item one source proposes, with what the response shows about it."""

    item_id: str
    score: float
    source: str
    title: str | None = None
    genres: tuple[str, ...] = ()
    # Only its direction counts (explanations compare cosines): from the item table it has
    # unit length, from an index payload it is the vector as stored.
    vector: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def from_payload(
        cls,
        item_id: str,
        score: float,
        source: str,
        payload: dict[str, Any] | None,
        vector: np.ndarray | None = None,
    ) -> Candidate:
        payload = payload or {}
        return cls(
            item_id=item_id,
            score=score,
            source=source,
            title=payload.get("title"),
            genres=tuple(payload.get("genres") or ()),
            vector=vector,
        )


def passes(candidate: Candidate, genres: Sequence[str], exclude_genres: Sequence[str]) -> bool:
    """The request's genre filter, for sources that are not filtered by the vector index."""
    if genres and not set(genres) & set(candidate.genres):
        return False
    return not set(exclude_genres) & set(candidate.genres)


@dataclass
class VersionHint:
    """The active version as this process last read it: a request asks for the user's batch
    vector of that version in the same round trip as the pointer itself, and asks again only
    in the rare request that sees the pointer move."""

    version: str | None = None


@dataclass(frozen=True)
class UserContext:
    version: str | None
    state: UserState
    batch_vector: np.ndarray | None


async def user_context(
    redis: RedisClient, user_id: str, hint: VersionHint, pinned: str | None = None
) -> UserContext:
    """What a request needs to know about a user: the active version, the user's online state
    and batch vector, in one round trip to the user's node (all three keys are in the user's
    hash tag: `core.keys`). With `pinned` (an experiment's arm), that version instead of the
    active one, and its batch vector."""
    if pinned is not None:
        raw_state, raw_batch = await _round_trip(
            redis,
            [("GET", keys.user_state(user_id)),
             ("HGET", keys.user_vectors(pinned, user_id), user_id)],
        )  # fmt: skip
        for reply in (raw_state, raw_batch):
            if isinstance(reply, Exception) and not is_wrong_type(reply):
                raise reply
        return await _context_of(redis, user_id, pinned, raw_state, raw_batch)
    known = hint.version
    commands: list[tuple[str | bytes, ...]] = [
        ("GET", keys.active_model_near(user_id)),
        ("GET", keys.user_state(user_id)),
    ]
    if known is not None:
        commands.append(("HGET", keys.user_vectors(known, user_id), user_id))
    replies = await _round_trip(redis, commands)
    for reply in replies:
        if isinstance(reply, Exception) and not is_wrong_type(reply):
            raise reply
    raw_version, raw_state = replies[0], replies[1]
    if raw_version is None:
        # No copy in the user's tag: nothing was published, or the last publish predates the
        # copies (`recsys migrate-state` writes them); the pointer itself still says.
        raw_version = await redis.get(keys.ACTIVE_MODEL)
    version = as_bytes(raw_version).decode() if raw_version else None
    if version == known:
        raw_batch = replies[2] if known is not None else None
    else:  # a new version was published since this process last asked
        hint.version = version
        raw_batch = (
            await redis.hget(keys.user_vectors(version, user_id), user_id) if version else None
        )
    return await _context_of(redis, user_id, version, raw_state, raw_batch)


async def _context_of(
    redis: RedisClient, user_id: str, version: str | None, raw_state: Any, raw_batch: Any
) -> UserContext:
    if is_wrong_type(raw_state):  # format 1, until the worker next writes this user
        raw_state = await redis.hmget(keys.user_state(user_id), LEGACY_FIELDS)
    return UserContext(
        version=version,
        state=UserState.decode(raw_state),
        batch_vector=vector_from_bytes(as_bytes(raw_batch)) if raw_batch else None,
    )


async def _round_trip(redis: RedisClient, commands: list[tuple[str | bytes, ...]]) -> list[Any]:
    """Several commands in one round trip, their replies as Redis sent them (an error reply as
    an exception in its place).

    On one Redis, straight on a connection of the client's pool: for the read every request
    makes, the client's own command path (retry wrapper, event dispatch, observability hooks;
    about 220 Python calls a command) took 150 to 200 µs more than this when the process had
    been idle for 5 ms (ad-hoc timing on the 2-core benchmark machine). The pool still
    connects, authenticates and replaces a connection the server closed; a connection that
    fails or is cancelled mid-reply is disconnected by redis-py itself. On a cluster, a
    pipeline: redis-py sends each command to its key's node (one node when, as here, the keys
    share a hash tag).
    """
    if isinstance(redis, aioredis.RedisCluster):
        async with redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        return [await _reply(connection) for _ in commands]
    finally:
        await pool.release(connection)


async def _reply(connection: Any) -> Any:
    """One reply; an error reply is returned, not raised, so that the replies after it are
    still read off the connection."""
    try:
        return await connection.read_response()
    except ResponseError as error:
        return error


async def payloads(
    redis: RedisClient, version: str, item_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    if not item_ids:
        return {}
    raw = await redis.hmget(keys.item_payloads(version), list(item_ids))
    return {i: orjson.loads(r) for i, r in zip(item_ids, raw, strict=True) if r}


async def item_vectors(
    redis: RedisClient, version: str, item_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    if not item_ids:
        return {}
    raw = await redis.hmget(keys.item_vectors(version), list(item_ids))
    return {i: vector_from_bytes(as_bytes(r)) for i, r in zip(item_ids, raw, strict=True) if r}


def _merge(scored: Iterable[tuple[list[Any], float]]) -> list[tuple[str, float]]:
    """Sum weighted scores of several ranked lists; best first, ties by the higher id
    (`core.ranking.best_first`: the order the in-process replay of the ranking stage uses)."""
    total: dict[str, float] = {}
    for ranked, weight in scored:
        for member, score in ranked:
            item = as_bytes(member).decode()
            total[item] = total.get(item, 0.0) + weight * float(score)
    return best_first(total.items(), len(total))


async def trending(
    redis: RedisClient,
    half_life_s: float,
    limit: int,
    shards: int,
    now_s: float | None = None,
) -> list[tuple[str, float]]:
    """The top trending items, from the current and the previous epoch's decayed counts of
    every item shard (an item is counted in one shard only, so the shards' tops merge into
    the overall top): 2 x `shards` ranked reads, each of at most `limit` items.

    Each epoch is read by rank with a limit instead of ZUNION over whole sets: an item that
    would only make the top through the (2**-16 weighted) previous epoch is negligible.
    """
    epoch = trending_epoch(time.time() if now_s is None else now_s, half_life_s)
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            pipe.zrevrange(keys.trending(shard, epoch), 0, limit - 1, withscores=True)
            pipe.zrevrange(keys.trending(shard, epoch - 1), 0, limit - 1, withscores=True)
        replies = await pipe.execute()
    weights = [1.0, PREVIOUS_EPOCH_WEIGHT] * shards
    return _merge(zip(replies, weights, strict=True))[:limit]


async def popular(
    redis: RedisClient, version: str, genres: Sequence[str], limit: int
) -> list[tuple[str, float]]:
    """The most interacted-with items of the model's data, overall or within any of `genres`."""
    if not genres:
        ranked = await redis.zrevrange(keys.popular(version), 0, limit - 1, withscores=True)
        return _merge([(ranked, 1.0)])
    async with redis.pipeline(transaction=False) as pipe:
        for genre in genres:
            pipe.zrevrange(keys.popular_by_genre(version, genre), 0, limit - 1, withscores=True)
        per_genre = await pipe.execute()
    # An item of two requested genres appears in both lists with the same count: take it once.
    best: dict[str, float] = {}
    for ranked in per_genre:
        for item, score in _merge([(ranked, 1.0)]):
            best[item] = max(best.get(item, 0.0), score)
    return sorted(best.items(), key=lambda pair: -pair[1])[:limit]


@dataclass(frozen=True)
class RankingReads:
    """The ranking stage's reads from Redis, made in one round trip."""

    transitions: list[list[tuple[str, float]]]  # per item followed, newest first
    trending: list[tuple[str, float]]


async def ranking_reads(
    redis: RedisClient,
    followed: Sequence[str],
    transitions_limit: int,
    limit: int,
    now_s: float,
    settings: Settings,
    trending: list[tuple[str, float]] | None = None,
) -> RankingReads:
    """The stream's transitions from each of `followed` (its current and previous epoch, as
    trending) and trending (unless given: `api.signal_cache.TrendingCache`): one pipeline (on a
    cluster, one request per node holding any of the keys), none when nothing is to be read."""
    if not followed and trending is not None:
        return RankingReads(transitions=[], trending=trending)
    shards = settings.redis_item_shards
    moves_epoch = trending_epoch(now_s, settings.stream_transition_half_life_s)
    trend_epoch = trending_epoch(now_s, settings.stream_trending_half_life_s)
    async with redis.pipeline(transaction=False) as pipe:
        for item in followed:
            shard = keys.item_shard(item, shards)
            for epoch in (moves_epoch, moves_epoch - 1):
                key = keys.item_transitions(shard, epoch, item)
                pipe.zrevrange(key, 0, transitions_limit - 1, withscores=True)
        if trending is None:
            for shard in range(shards):
                pipe.zrevrange(keys.trending(shard, trend_epoch), 0, limit - 1, withscores=True)
                previous = keys.trending(shard, trend_epoch - 1)
                pipe.zrevrange(previous, 0, limit - 1, withscores=True)
        replies = await pipe.execute()
    moves = [
        merge_epochs(_decoded(replies[2 * n]), _decoded(replies[2 * n + 1]), transitions_limit)
        for n in range(len(followed))
    ]
    if trending is None:
        trend = replies[2 * len(followed) :]
        trending = merge_epochs(
            (pair for reply in trend[0::2] for pair in _decoded(reply)),
            (pair for reply in trend[1::2] for pair in _decoded(reply)),
            limit,
        )
    return RankingReads(transitions=moves, trending=trending)


def _decoded(ranked: list[Any]) -> list[tuple[str, float]]:
    return [(as_bytes(member).decode(), float(score)) for member, score in ranked]


@dataclass(frozen=True)
class ItemStreamReads:
    """The stream's counts of a request's candidates, in their order."""

    trending: np.ndarray  # the current trending epoch's decayed count (0: none)
    window_1h: np.ndarray  # events of interest in the current hour window


async def item_stream_reads(
    redis: RedisClient, item_ids: Sequence[str], now_s: float, settings: Settings
) -> ItemStreamReads:
    """The candidates' trending counts and hour-window counts at `now_s`: per item shard one
    ZMSCORE and one HMGET, all in one pipeline (on a cluster, one request per node)."""
    shards = settings.redis_item_shards
    by_shard: dict[int, list[int]] = {}
    for position, item in enumerate(item_ids):
        by_shard.setdefault(keys.item_shard(item, shards), []).append(position)
    epoch = trending_epoch(now_s, settings.stream_trending_half_life_s)
    hour = window_start(now_s, WINDOWS["1h"])
    per_item = len(window_fields(""))
    async with redis.pipeline(transaction=False) as pipe:
        for shard, positions in by_shard.items():
            members = [item_ids[p] for p in positions]
            pipe.zmscore(keys.trending(shard, epoch), members)
            fields = [name for item in members for name in window_fields(item)]
            pipe.hmget(keys.item_window(shard, "1h", hour), fields)
        replies = await pipe.execute()
    trending = np.zeros(len(item_ids))
    window = np.zeros(len(item_ids))
    for n, positions in enumerate(by_shard.values()):
        scores, counts = replies[2 * n], replies[2 * n + 1]
        for p, score in zip(positions, scores, strict=True):
            trending[p] = float(score) if score is not None else 0.0
        for m, p in enumerate(positions):
            cells = counts[m * per_item : (m + 1) * per_item]
            window[p] = sum(int(c) for c in cells if c is not None)
    return ItemStreamReads(trending, window)
