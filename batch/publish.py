"""Publish a trained model as a new version: disk artifacts, Qdrant, Redis, then one switch.

Order matters for readers: the vector index version is written and sealed, every Redis key of
the version is written, and only then does `recsys:model:active` point at it. Old versions
beyond `keep_versions` are removed afterwards (never the active one).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from redis.typing import EncodableT, FieldT

from core import keys
from core.clients import RedisClient
from core.drift import Baseline
from core.model_version import ModelMeta, activate, active_version, as_bytes, vector_to_bytes
from core.ranking_store import RankingParts, write_ranking
from core.rules import gram_matrix
from core.settings import Settings
from core.vectors import ItemPoint, VectorIndex, point_id

_REDIS_CHUNK = 5000
_INDEX_CHUNK = 4096

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class ModelArtifacts:
    """Everything a published version holds. Arrays are aligned with `user_ids`/`item_ids`."""

    model: str
    dataset: str
    user_ids: np.ndarray  # str
    item_ids: np.ndarray  # str
    user_vectors: np.ndarray  # float32 (n_users x dim)
    item_vectors: np.ndarray  # float32 (n_items x dim)
    item_payloads: list[dict[str, Any]]  # title, genres, year per item
    popularity: np.ndarray  # interaction count per item
    trained_until: int
    params: dict[str, Any] = field(default_factory=dict)
    ranking: RankingParts | None = None  # the learned ranker and item neighbours, if trained
    drift_baseline: Baseline | None = None  # what it was trained on (`batch.drift_baseline`)

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def save(self, directory: Path, version: str) -> None:
        """Plain arrays (.npz, no pickle) plus a JSON manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / "model.npz",
            user_ids=self.user_ids.astype(str),
            item_ids=self.item_ids.astype(str),
            user_vectors=self.user_vectors,
            item_vectors=self.item_vectors,
            popularity=self.popularity,
        )
        manifest = {
            "version": version,
            "model": self.model,
            "dataset": self.dataset,
            "dim": self.dim,
            "trained_until": self.trained_until,
            "params": self.params,
            "items": self.item_payloads,
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, default=str))
        if self.ranking is not None:
            if self.ranking.ranker_text is not None:
                (directory / "ranker.txt").write_text(self.ranking.ranker_text)
            (directory / "ranking.json").write_text(
                json.dumps(
                    {
                        "feature_version": self.ranking.feature_version,
                        "params": self.ranking.params,
                        "neighbours": self.ranking.neighbours,
                        "first_seen": self.ranking.first_seen,
                    },
                    default=str,
                )
            )


def new_version_id(model: str) -> str:
    """Sortable by time, unique, and valid as a Qdrant collection or directory name."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{model}-{secrets.token_hex(2)}"


async def publish(
    artifacts: ModelArtifacts,
    index: VectorIndex,
    redis: RedisClient,
    models_dir: Path,
    *,
    keep_versions: int = 3,
    progress: Progress = _no_progress,
    version: str | None = None,
) -> str:
    """Write a new version everywhere and make it active; return its id."""
    _refuse_colliding_point_ids([str(i) for i in artifacts.item_ids])
    version = version or new_version_id(artifacts.model)
    artifacts.save(models_dir / version, version)
    await _write_index(artifacts, index, version, progress)
    await _write_redis(artifacts, redis, version, progress)
    # Listed first, then the one switch: the two keys may live on different nodes of a cluster,
    # and a version listed but never activated is removed like any old one.
    await redis.zadd(keys.MODEL_VERSIONS, {version: time.time()})
    await activate(redis, version)
    await remove_old_versions(index, redis, models_dir, keep_versions)
    return version


def _refuse_colliding_point_ids(item_ids: list[str]) -> None:
    """Two items with one point id would overwrite each other in the index (odds about 1 in
    2,000 for 10^8 items; see `core.vectors.base.point_id`): say so rather than lose one."""
    owner: dict[int, str] = {}
    for item in item_ids:
        other = owner.setdefault(point_id(item), item)
        if other != item:
            raise ValueError(
                f"items {other!r} and {item!r} map to the same point id {point_id(item)}; "
                "rename one of them before publishing"
            )


async def publish_configured(
    artifacts: ModelArtifacts,
    settings: Settings,
    *,
    keep_versions: int = 3,
    progress: Progress = _no_progress,
    version: str | None = None,
) -> str:
    """`publish` to the Qdrant and Redis that `settings` name (artifacts saved under the state
    directory); the clients are opened for it and closed after."""
    from core.clients import redis_client_for
    from core.vectors import open_vector_index

    index = open_vector_index(settings)
    redis = redis_client_for(settings)
    try:
        return await publish(
            artifacts,
            index,
            redis,
            settings.state_dir / "models",
            keep_versions=keep_versions,
            progress=progress,
            version=version,
        )
    finally:
        await index.close()
        await redis.aclose()


async def _write_index(
    artifacts: ModelArtifacts, index: VectorIndex, version: str, progress: Progress
) -> None:
    total = len(artifacts.item_ids)
    await index.create_version(version, artifacts.dim)
    for start in range(0, total, _INDEX_CHUNK):
        stop = min(start + _INDEX_CHUNK, total)
        points = [
            ItemPoint(
                item_id=str(artifacts.item_ids[i]),
                vector=artifacts.item_vectors[i],
                payload={
                    **artifacts.item_payloads[i],
                    "item_id": str(artifacts.item_ids[i]),
                    "popularity": int(artifacts.popularity[i]),
                    "model_version": version,
                },
            )
            for i in range(start, stop)
        ]
        await index.upsert(version, points)
        progress("index", stop, total)
    progress("seal", 0, 1)
    await index.seal(version)
    progress("seal", 1, 1)


async def _write_redis(
    artifacts: ModelArtifacts, redis: RedisClient, version: str, progress: Progress
) -> None:
    item_ids = [str(i) for i in artifacts.item_ids]
    user_ids = [str(u) for u in artifacts.user_ids]
    total = len(item_ids) + len(user_ids)
    done = 0
    for start in range(0, len(item_ids), _REDIS_CHUNK):
        chunk = range(start, min(start + _REDIS_CHUNK, len(item_ids)))
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.item_vectors(version),
                mapping={item_ids[i]: vector_to_bytes(artifacts.item_vectors[i]) for i in chunk},
            )
            payloads: dict[FieldT, EncodableT] = {
                item_ids[i]: json.dumps(
                    {**artifacts.item_payloads[i], "popularity": int(artifacts.popularity[i])},
                    default=str,
                )
                for i in chunk
            }
            pipe.hset(keys.item_payloads(version), mapping=payloads)
            await pipe.execute()
        done += len(chunk)
        progress("redis", done, total)
    for start in range(0, len(user_ids), _REDIS_CHUNK):
        stop = min(start + _REDIS_CHUNK, len(user_ids))
        by_key: dict[str, dict[FieldT, EncodableT]] = {}
        for i in range(start, stop):
            key = keys.user_vectors(version, user_ids[i])
            by_key.setdefault(key, {})[user_ids[i]] = vector_to_bytes(artifacts.user_vectors[i])
        async with redis.pipeline(transaction=False) as pipe:
            for key, vectors in by_key.items():
                pipe.hset(key, mapping=vectors)
            await pipe.execute()
        done += stop - start
        progress("redis", done, total)
    await _write_popularity(artifacts, redis, version, item_ids)
    if artifacts.ranking is not None:
        await write_ranking(redis, version, artifacts.ranking)
    gram = gram_matrix(artifacts.item_vectors)
    meta = ModelMeta(
        version=version,
        model=artifacts.model,
        dim=artifacts.dim,
        dataset=artifacts.dataset,
        trained_until=artifacts.trained_until,
        published_at=time.time(),
        n_items=len(item_ids),
        n_users=len(user_ids),
        params=artifacts.params,
    )
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.gram_matrix(version), vector_to_bytes(gram.astype(np.float32)))
        pipe.hset(keys.model_meta(version), mapping=meta.to_hash())
        if artifacts.drift_baseline is not None:
            pipe.set(keys.drift_baseline(version), artifacts.drift_baseline.to_json())
        await pipe.execute()


async def _write_popularity(
    artifacts: ModelArtifacts, redis: RedisClient, version: str, item_ids: list[str]
) -> None:
    by_genre: dict[str, dict[str, float]] = {}
    overall: dict[str, float] = {}
    for i, item_id in enumerate(item_ids):
        count = float(artifacts.popularity[i])
        if count <= 0:
            continue
        overall[item_id] = count
        for genre in artifacts.item_payloads[i].get("genres") or ():
            by_genre.setdefault(str(genre), {})[item_id] = count
    async with redis.pipeline(transaction=False) as pipe:
        if overall:
            pipe.zadd(keys.popular(version), overall)
        for genre, counts in by_genre.items():
            pipe.zadd(keys.popular_by_genre(version, genre), counts)
        await pipe.execute()


async def remove_old_versions(
    index: VectorIndex, redis: RedisClient, models_dir: Path, keep_versions: int
) -> list[str]:
    """Delete all but the newest `keep_versions` versions (the active one always stays)."""
    active = await active_version(redis)
    known = [as_bytes(v).decode() for v in await redis.zrange(keys.MODEL_VERSIONS, 0, -1)]
    stale = [v for v in known[: max(0, len(known) - keep_versions)] if v != active]
    for version in stale:
        await index.drop_version(version)
        async for key in redis.scan_iter(match=keys.model_pattern(version), count=500):
            await redis.unlink(key)
        async with redis.pipeline(transaction=False) as pipe:
            for tag in keys.USER_TAGS:
                pipe.unlink(keys.user_vectors_of_tag(version, tag))
            await pipe.execute()
        await redis.zrem(keys.MODEL_VERSIONS, version)
        shutil.rmtree(models_dir / version, ignore_errors=True)
    return stale
