"""The active model version as the worker needs it: item vectors, genres and Y^T Y in memory.

Loaded from Redis once per version (one HGETALL per hash) and swapped when
`recsys:model:active` changes; the pointer is checked at most every `refresh_s` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from core import keys
from core.clients import RedisClient
from core.heap import freeze_long_lived
from core.model_version import (
    ModelMeta,
    active_version,
    as_bytes,
    load_version_items,
    model_meta,
    vector_from_bytes,
)
from core.rules import gram_matrix


@dataclass(frozen=True)
class ActiveModel:
    meta: ModelMeta
    item_row: dict[str, int]
    item_vectors: np.ndarray  # (n_items x dim) float32
    item_genres: list[tuple[str, ...]]
    gram: np.ndarray  # (dim x dim) float64

    @property
    def version(self) -> str:
        return self.meta.version

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self.item_row.get(item_id)
        return None if row is None else self.item_vectors[row]

    def genres(self, item_id: str) -> tuple[str, ...]:
        row = self.item_row.get(item_id)
        return () if row is None else self.item_genres[row]

    @property
    def alpha(self) -> float:
        return float(self.meta.params.get("alpha", 1.0))

    @property
    def regularization(self) -> float:
        return float(self.meta.params.get("regularization", 0.01))


async def load_model(redis: RedisClient, version: str) -> ActiveModel | None:
    meta = await model_meta(redis, version)
    items = await load_version_items(redis, version)
    if meta is None or items is None:
        return None
    raw_gram = await redis.get(keys.gram_matrix(version))
    gram = (
        vector_from_bytes(as_bytes(raw_gram)).reshape(meta.dim, meta.dim).astype(np.float64)
        if raw_gram
        else gram_matrix(items.vectors)
    )
    return ActiveModel(
        meta=meta,
        item_row=items.row_of_item,
        item_vectors=items.vectors.astype(np.float32),
        item_genres=items.genres,
        gram=gram,
    )


# How often the worker checks which version is active (at most).
REFRESH_S = 5.0


class ModelCache:
    """Keeps the active version loaded; `get()` is cheap between refreshes."""

    def __init__(self, redis: RedisClient, refresh_s: float = REFRESH_S) -> None:
        self.redis = redis
        self.refresh_s = refresh_s
        self._model: ActiveModel | None = None
        self._checked_at = float("-inf")
        # Batches are applied concurrently: one refreshes while the others wait for it, rather
        # than carrying on with the model it is about to replace (or with none, at start-up).
        self._refreshing = asyncio.Lock()

    async def get(self) -> ActiveModel | None:
        if time.monotonic() - self._checked_at < self.refresh_s:
            return self._model
        async with self._refreshing:
            now = time.monotonic()
            if now - self._checked_at >= self.refresh_s:  # not refreshed while we waited
                version = await active_version(self.redis)
                if version is None:
                    self._model = None
                elif self._model is None or self._model.version != version:
                    self._model = await load_model(self.redis, version) or self._model
                    freeze_long_lived()  # the model lives until the next version
                self._checked_at = now
        return self._model
