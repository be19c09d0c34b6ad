"""Reading model versions from Redis: which one is active and what it holds.

Writers (`batch.publish`) fill a version completely, then switch to it (`activate`: the
pointer `recsys:model:active` and its copy in each users' hash tag); readers resolve the active
version first and name it in every later read, so a reader sees one whole version or the
previous one, never a mixture.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.typing import EncodableT, FieldT

from core import keys
from core.clients import RedisClient


@dataclass(frozen=True)
class ModelMeta:
    version: str
    model: str
    dim: int
    dataset: str
    trained_until: int  # epoch seconds of the last training interaction
    published_at: float
    n_items: int
    n_users: int
    params: dict[str, Any]
    # The MLflow run that logged its training (`batch.tracking`), set after publishing; None
    # when tracking is off.
    mlflow_run_id: str | None = None

    @classmethod
    def from_hash(cls, version: str, raw: dict[bytes, bytes]) -> ModelMeta:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            version=version,
            model=fields["model"],
            dim=int(fields["dim"]),
            dataset=fields["dataset"],
            trained_until=int(fields["trained_until"]),
            published_at=float(fields["published_at"]),
            n_items=int(fields["n_items"]),
            n_users=int(fields["n_users"]),
            params=json.loads(fields.get("params", "{}")),
            mlflow_run_id=fields.get("mlflow_run_id"),
        )

    def to_hash(self) -> dict[FieldT, EncodableT]:
        fields: dict[FieldT, EncodableT] = {
            "model": self.model,
            "dim": str(self.dim),
            "dataset": self.dataset,
            "trained_until": str(self.trained_until),
            "published_at": repr(self.published_at),
            "n_items": str(self.n_items),
            "n_users": str(self.n_users),
            "params": json.dumps(self.params, sort_keys=True),
        }
        if self.mlflow_run_id:
            fields["mlflow_run_id"] = self.mlflow_run_id
        return fields


async def set_mlflow_run(redis: RedisClient, version: str, run_id: str) -> None:
    """Link `version` to the MLflow run that logged its training (`ModelMeta.mlflow_run_id`)."""
    await redis.hset(keys.model_meta(version), "mlflow_run_id", run_id)


def as_bytes(value: Any) -> bytes:
    """Redis replies are bytes with our clients (decode_responses=False); typed as bytes | str."""
    return value if isinstance(value, bytes) else str(value).encode()


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def vector_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32)


async def active_version(redis: RedisClient) -> str | None:
    raw = await redis.get(keys.ACTIVE_MODEL)
    return as_bytes(raw).decode() if raw else None


class UnknownVersionError(LookupError):
    """A version that is not among the published ones (`recsys:model:versions`)."""


async def listed_versions(redis: RedisClient) -> list[tuple[str, float]]:
    """The published versions that are kept, oldest first, with their publish times."""
    listed: list[Any] = await redis.zrange(keys.MODEL_VERSIONS, 0, -1, withscores=True)
    return [(as_bytes(version).decode(), float(at)) for version, at in listed]


async def switch_to(redis: RedisClient, version: str) -> None:
    """Activate a version that was published and is still kept (a rollback, or a roll
    forward again); raises `UnknownVersionError` for any other, whose keys may be gone."""
    if (
        version not in dict(await listed_versions(redis))
        or await model_meta(redis, version) is None
    ):
        raise UnknownVersionError(version)
    await activate(redis, version)


async def activate(redis: RedisClient, version: str) -> None:
    """Make `version` the active one: the pointer the workers follow, and its copy in every
    users' hash tag, which the API reads with the user (`core.keys.active_model_near`). On a
    cluster the copies live on several nodes and are not switched at one instant: for a moment
    some users are answered from the old version and some from the new, each consistently."""
    async with redis.pipeline(transaction=False) as pipe:
        for tag in keys.USER_TAGS:
            pipe.set(keys.active_model_of_tag(tag), version)
        pipe.set(keys.ACTIVE_MODEL, version)
        await pipe.execute()


async def model_meta(redis: RedisClient, version: str) -> ModelMeta | None:
    raw = await redis.hgetall(keys.model_meta(version))
    return (
        ModelMeta.from_hash(version, {as_bytes(k): as_bytes(v) for k, v in raw.items()})
        if raw
        else None
    )


async def item_vector(redis: RedisClient, version: str, item_id: str) -> np.ndarray | None:
    raw = await redis.hget(keys.item_vectors(version), item_id)
    return vector_from_bytes(as_bytes(raw)) if raw else None


async def batch_user_vector(redis: RedisClient, version: str, user_id: str) -> np.ndarray | None:
    raw = await redis.hget(keys.user_vectors(version, user_id), user_id)
    return vector_from_bytes(as_bytes(raw)) if raw else None


@dataclass(frozen=True)
class VersionItems:
    """A published version's items as its readers load them: row `i` is one item.

    Written by `batch.publish` (the vectors and payload hashes of the version); read once per
    version by the stream worker (`streams.model_cache`) and the API (`api.item_table`), which
    build their own in-memory views on top. A version never changes once active, so neither
    reader reloads it.
    """

    version: str
    item_ids: list[str]
    vectors: np.ndarray  # (items x dim) float32, as published
    titles: list[str | None]
    genres: list[tuple[str, ...]]
    popularity: np.ndarray | None = None  # interactions per item in the training data

    @property
    def row_of_item(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.item_ids)}


async def load_version_items(redis: RedisClient, version: str) -> VersionItems | None:
    """The version's items from its Redis hashes in one round trip; None if it has none.

    Decoding is CPU work proportional to the catalog: it runs off the event loop, so that a large
    catalog does not stall the requests (or batches) in flight while a new version is loaded.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.item_vectors(version))
        pipe.hgetall(keys.item_payloads(version))
        raw_vectors, raw_payloads = await pipe.execute()
    if not raw_vectors:
        return None
    return await asyncio.to_thread(_decode_items, version, raw_vectors, raw_payloads)


def _decode_items(
    version: str, raw_vectors: dict[Any, Any], raw_payloads: dict[Any, Any]
) -> VersionItems:
    item_ids = [as_bytes(k).decode() for k in raw_vectors]
    payloads = {as_bytes(k).decode(): orjson.loads(v) for k, v in raw_payloads.items()}
    found = [payloads.get(item, {}) for item in item_ids]
    return VersionItems(
        version=version,
        item_ids=item_ids,
        vectors=np.stack([vector_from_bytes(as_bytes(v)) for v in raw_vectors.values()]),
        titles=[p.get("title") for p in found],
        genres=[tuple(p.get("genres") or ()) for p in found],
        popularity=np.array([float(p.get("popularity") or 0) for p in found]),
    )


class NoPreviousVersionError(LookupError):
    """A rollback was asked for, but no kept version was published before the active one (or
    none is active)."""


async def previous_version(redis: RedisClient) -> tuple[str, str]:
    """(the active version, the kept version published just before it): what a rollback
    switches to. Raises `NoPreviousVersionError` when there is none."""
    active = await active_version(redis)
    kept = [version for version, _ in await listed_versions(redis)]
    if active is None or active not in kept or kept.index(active) == 0:
        raise NoPreviousVersionError(active or "")
    return active, kept[kept.index(active) - 1]


async def rollback(redis: RedisClient) -> tuple[str, str]:
    """Switch atomically (as `switch_to`) to the kept version published before the active one;
    returns (from, to). A second rollback goes one further back; `switch_to` goes forward
    again. User vectors are rebuilt lazily, as after any switch."""
    current, previous = await previous_version(redis)
    await switch_to(redis, previous)
    return current, previous


async def load_item_payloads(redis: RedisClient, version: str) -> dict[str, dict[str, Any]]:
    """The version's item payloads (title, genres, year, popularity), by item id; empty when the
    version has none (or is gone)."""
    raw: dict[Any, Any] = await redis.hgetall(keys.item_payloads(version))
    return {as_bytes(k).decode(): orjson.loads(v) for k, v in raw.items()}


async def batch_user_vectors(
    redis: RedisClient, version: str, user_ids: list[str]
) -> dict[str, np.ndarray]:
    """The version's batch vectors of `user_ids` (users it has none for are left out): one
    HMGET per users' hash tag, in one pipeline."""
    by_tag: dict[str, list[str]] = {}
    for user in user_ids:
        by_tag.setdefault(keys.user_tag(user), []).append(user)
    if not by_tag:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for tag, users in by_tag.items():
            pipe.hmget(keys.user_vectors_of_tag(version, tag), users)
        replies = await pipe.execute()
    found: dict[str, np.ndarray] = {}
    for users, values in zip(by_tag.values(), replies, strict=True):
        for user, raw in zip(users, values, strict=True):
            if raw:
                found[user] = vector_from_bytes(as_bytes(raw))
    return found


# Gate decisions of `recsys retrain` (written by `batch.retrain`, read by `recsys models`): JSON
# objects, newest first, at most `keys.RETRAIN_DECISIONS_KEPT`. Each names the candidate version
# (published or not), the active one, both figures, the margin, the decision and its reason.


async def record_decision(redis: RedisClient, decision: dict[str, Any]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(
            keys.RETRAIN_DECISIONS, orjson.dumps(decision, option=orjson.OPT_SERIALIZE_NUMPY)
        )
        pipe.ltrim(keys.RETRAIN_DECISIONS, 0, keys.RETRAIN_DECISIONS_KEPT - 1)
        await pipe.execute()


async def recorded_decisions(redis: RedisClient, limit: int = 20) -> list[dict[str, Any]]:
    """The newest `limit` decisions, newest first."""
    raw: list[Any] = await redis.lrange(keys.RETRAIN_DECISIONS, 0, max(0, limit - 1))
    return [orjson.loads(as_bytes(entry)) for entry in raw]


async def decision_for(redis: RedisClient, version: str) -> dict[str, Any] | None:
    """The newest recorded decision about `version` as a candidate, if any."""
    for decision in await recorded_decisions(redis, keys.RETRAIN_DECISIONS_KEPT):
        if decision.get("candidate") == version:
            return decision
    return None
