"""The vector index interface shared by publishing (writes) and serving (reads).

A model version is an immutable set of item vectors: the publisher creates it, fills it,
seals it, and only then makes it active (the pointer lives in Redis, see `core.keys`).
Readers always name the version they query, so they never see a half-written one.
"""

from __future__ import annotations

import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Qdrant point ids must be unsigned integers or UUIDs; items keep their own string ids, so the
# point id is derived from the item id, and every process computes the same id without a lookup
# table. An integer (the top 63 bits of a UUID5 of the item id) rather than the UUID itself: the
# engine hands integer ids back as ints, where it builds a `uuid.UUID` object for each hit of
# each search (about 0.1 ms of a request's 100 hits), and converts a filter's integers faster.
# A catalog would need about 10^8 items before two of them collided with odds of 1 in 2,000;
# publishing checks that none do.
_ITEM_NAMESPACE = uuid.UUID("6f1c3a52-3c1e-4a8e-9d56-0f9e5b1f7a10")


# A request's seen-items filter names up to ~100 items, and a UUID5 (a SHA-1) costs a few µs:
# item ids repeat across requests, so ids are remembered (a bounded cache, a few MB when full).
@functools.lru_cache(maxsize=1 << 17)
def point_id(item_id: str) -> int:
    return uuid.uuid5(_ITEM_NAMESPACE, item_id).int >> 65


def check_point_ids(points: Sequence[Any], version: str) -> None:
    """Refuse a version whose points have UUID ids (published by a release before integer
    ids): its items could not be matched to the item table or excluded by a filter."""
    if points and not isinstance(points[0].id, int):
        raise VectorIndexError(
            f"version {version!r} has UUID point ids from an earlier release; "
            "publish a new version (recsys train) and serve that one"
        )


@dataclass(frozen=True)
class ItemPoint:
    """One item as stored: its vector and payload (title, genres, year, popularity, ...)."""

    item_id: str
    vector: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchHit:
    item_id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class PointScores:
    """Search hits as the index knows them, best first: point ids (`point_id(item_id)`) and
    their scores. Two lists rather than an object per hit: a search makes a hundred hits per
    request, and building a named tuple for each cost more than the lists (about 20 µs)."""

    points: list[int]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class ItemFilter:
    """Restrictions on candidate items: any of `genres`, none of `exclude_genres`, and none
    of `exclude_item_ids` (e.g. what the user has already seen)."""

    genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()
    exclude_item_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_empty(self) -> bool:
        return not (self.genres or self.exclude_genres or self.exclude_item_ids)


def payload_selection(fields: Sequence[str] | None) -> bool | list[str]:
    """What to ask a backend for: the whole payload, or the named fields plus `item_id`."""
    return True if fields is None else sorted({"item_id", *fields})


def hit_from_point(point: Any, with_vectors: bool) -> SearchHit:
    """A search hit from either backend's point or record (same attribute names in both)."""
    # Each attribute access converts from the engine's objects again: read each one once.
    payload = point.payload
    raw_vector = point.vector if with_vectors else None
    return SearchHit(
        item_id=str(payload.get("item_id")) if payload else "None",
        score=float(getattr(point, "score", 0.0)),
        payload=dict(payload) if payload else {},
        vector=None if raw_vector is None else np.asarray(raw_vector, dtype=np.float32),
    )


class VectorIndexError(RuntimeError):
    """The index cannot serve the request (backend down, version missing)."""


class VectorIndex(ABC):
    """Item vectors per model version. Distance is the dot product (ALS scores)."""

    @abstractmethod
    async def create_version(self, version: str, dim: int) -> None:
        """Create an empty, writable version; fails if it exists."""

    @abstractmethod
    async def upsert(self, version: str, points: Sequence[ItemPoint]) -> None:
        """Add items to a version that is not sealed yet."""

    @abstractmethod
    async def seal(self, version: str) -> None:
        """Finish writing: build the index and make the version durable and read-only."""

    @abstractmethod
    async def drop_version(self, version: str) -> None:
        """Delete a version (no-op if missing)."""

    @abstractmethod
    async def list_versions(self) -> list[str]:
        """Versions present in the backend, sealed or not, oldest first."""

    @abstractmethod
    async def search(
        self,
        version: str,
        vector: np.ndarray,
        k: int,
        item_filter: ItemFilter | None = None,
        *,
        with_vectors: bool = False,
        payload_fields: Sequence[str] | None = None,
    ) -> list[SearchHit]:
        """The `k` items with the highest dot product with `vector`, best first.

        `payload_fields` limits the payload returned (always with `item_id`): building large
        payloads for every candidate is a good share of a search's cost.
        """

    @abstractmethod
    async def search_points(
        self, version: str, vector: np.ndarray, k: int, item_filter: ItemFilter | None = None
    ) -> PointScores:
        """`search` without payloads or vectors, best first: for a caller that holds the items
        of the version in memory (reading payloads is most of a search's cost)."""

    @abstractmethod
    async def get(
        self, version: str, item_ids: Sequence[str], *, with_vectors: bool = True
    ) -> list[SearchHit]:
        """Items by id (score 0); unknown ids are left out."""

    @abstractmethod
    async def count(self, version: str) -> int:
        """Number of items in a version."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources."""
