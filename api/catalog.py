"""Redis reads the API makes about items and users (key layout in `core.keys`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from core import keys
from core.model_version import as_bytes, vector_from_bytes
from core.rules import PREVIOUS_EPOCH_WEIGHT, trending_epoch
from core.user_state import STATE_FIELDS, UserState


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


# The active version, the user's online state and their batch vector of that version, in one
# round trip: the batch vector's key depends on the version, which a pipeline cannot chain.
# ARGV[2] .. version .. ARGV[3] is `core.keys.user_vectors(version)`; ARGV[4..] are the
# state's fields (`STATE_FIELDS`), read as the stream worker reads them.
_USER_CONTEXT = """
local version = redis.call('GET', KEYS[1])
local state = redis.call('HMGET', KEYS[2], unpack(ARGV, 4))
local batch = false
if version then
  batch = redis.call('HGET', ARGV[2] .. version .. ARGV[3], ARGV[1])
end
return {version, state, batch}
"""
# Called by its digest: Redis then neither receives nor hashes the script's text per request.
_USER_CONTEXT_SHA = hashlib.sha1(_USER_CONTEXT.encode()).hexdigest()
_VECTORS_KEY_AROUND = keys.user_vectors("\x00").split("\x00")


@dataclass(frozen=True)
class UserContext:
    version: str | None
    state: UserState
    batch_vector: np.ndarray | None


async def user_context(redis: aioredis.Redis, user_id: str) -> UserContext:
    """What a request needs to know about a user, in one round trip (see `_USER_CONTEXT`)."""
    keys_and_args: list[str | bytes] = [
        keys.ACTIVE_MODEL, keys.user_state(user_id), user_id, *_VECTORS_KEY_AROUND, *STATE_FIELDS,
    ]  # fmt: skip
    try:
        reply = await _on_pooled_connection(redis, "EVALSHA", _USER_CONTEXT_SHA, 2, *keys_and_args)
    except NoScriptError:  # a restarted or flushed Redis: this call loads the script again
        reply = await redis.eval(_USER_CONTEXT, 2, *keys_and_args)
    raw_version, raw_state, raw_batch = reply
    return UserContext(
        version=as_bytes(raw_version).decode() if raw_version else None,
        state=UserState.from_fields([as_bytes(v) if v else None for v in raw_state]),
        batch_vector=vector_from_bytes(as_bytes(raw_batch)) if raw_batch else None,
    )


async def _on_pooled_connection(redis: aioredis.Redis, *command: str | bytes | int) -> Any:
    """One command on a connection of the client's pool, its reply as Redis sent it.

    For the call every request makes: the client's own command path (retry wrapper, event
    dispatch, observability hooks; about 220 Python calls) took 150 to 200 µs more than this
    when the process had been idle for 5 ms (ad-hoc timing on the 2-core benchmark machine).
    The pool still connects, authenticates and replaces a connection the server closed; a
    connection that fails or is cancelled mid-reply is disconnected by redis-py itself.
    """
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_command(*command), check_health=False)
        return await connection.read_response()
    finally:
        await pool.release(connection)


async def payloads(
    redis: aioredis.Redis, version: str, item_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    if not item_ids:
        return {}
    raw = await redis.hmget(keys.item_payloads(version), list(item_ids))
    return {i: orjson.loads(r) for i, r in zip(item_ids, raw, strict=True) if r}


async def item_vectors(
    redis: aioredis.Redis, version: str, item_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    if not item_ids:
        return {}
    raw = await redis.hmget(keys.item_vectors(version), list(item_ids))
    return {i: vector_from_bytes(as_bytes(r)) for i, r in zip(item_ids, raw, strict=True) if r}


def _merge(scored: Iterable[tuple[list[Any], float]]) -> list[tuple[str, float]]:
    """Sum weighted scores of several ranked lists; best first."""
    total: dict[str, float] = {}
    for ranked, weight in scored:
        for member, score in ranked:
            item = as_bytes(member).decode()
            total[item] = total.get(item, 0.0) + weight * float(score)
    return sorted(total.items(), key=lambda pair: -pair[1])


async def trending(
    redis: aioredis.Redis, half_life_s: float, limit: int, now_s: float | None = None
) -> list[tuple[str, float]]:
    """The top trending items, from the current and the previous epoch's decayed counts.

    Each epoch is read by rank with a limit instead of ZUNION over whole sets: an item that
    would only make the top through the (2**-16 weighted) previous epoch is negligible.
    """
    epoch = trending_epoch(time.time() if now_s is None else now_s, half_life_s)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrevrange(keys.trending(epoch), 0, limit - 1, withscores=True)
        pipe.zrevrange(keys.trending(epoch - 1), 0, limit - 1, withscores=True)
        current, previous = await pipe.execute()
    return _merge([(current, 1.0), (previous, PREVIOUS_EPOCH_WEIGHT)])[:limit]


async def popular(
    redis: aioredis.Redis, version: str, genres: Sequence[str], limit: int
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
