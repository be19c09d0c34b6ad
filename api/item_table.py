"""The items of a model version in process memory (ids, vectors, titles, genres), so that the
personalized path asks the vector index for point ids and scores only and attaches what a
response shows to the few items it keeps: reading payloads and vectors for every candidate is
most of an embedded search's cost.

A published version never changes, so its table is loaded from Redis once per process, in the
background; until it is in (or while Redis cannot give it), requests read payloads from the
index as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from api.mmr import unit_rows
from core.clients import RedisClient
from core.heap import freeze_long_lived
from core.model_version import VersionItems, load_version_items
from core.ranking import (
    FEATURES,
    GENRE_POPULAR_DEPTH,
    Ranker,
    RankerMismatchError,
    best_first,
    first_seen_array,
    popular_by_genre,
)
from core.ranking_store import Neighbours, RankingParts, load_ranking
from core.vectors import PointScores, point_id

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 30.0
RETRY_AFTER_S = 5.0
KEEP_VERSIONS = 2  # the active one and the one before it, for requests that straddle a switch


@dataclass(frozen=True)
class RankingStage:
    """A version's ranking parts as the API serves them: the neighbours, and the ranker when
    it has one that this code can feed (`problem` says why not otherwise)."""

    neighbours: Neighbours
    ranker: Ranker | None
    problem: str | None  # "no_ranker" | "ranker_mismatch" | None


@dataclass(frozen=True)
class ItemTable:
    """Row `i` describes one item; `row_of_point` maps the index's point ids to rows, and
    `row_of_item` the items' own ids."""

    version: str
    item_ids: list[str]
    titles: list[str | None]
    genres: list[tuple[str, ...]]
    # (items x dim) float32: the index's vectors scaled to unit length, as MMR and the
    # explanations compare directions only (scaled once here, not per request).
    unit_vectors: np.ndarray
    row_of_point: dict[int, int]  # by `PointScores.points`
    row_of_item: dict[str, int]
    popularity: np.ndarray  # training-data interactions per row
    ranking: RankingStage | None = None  # the version's ranking parts, when it has them
    # Per row: the first interaction in the training data (epoch s; NaN: never seen), and each
    # genre's most popular items (`core.ranking.genre_popular`'s lists); both for the ranking
    # stage only.
    first_seen_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    by_genre: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # The version's most popular items, best first, as its `popular` sorted set orders them
    # (`core.ranking.best_first`), up to POPULAR_DEPTH: the ranking stage's `popular` source,
    # counted once here instead of read from Redis by every request.
    popular: list[tuple[str, float]] = field(default_factory=list)

    def top_popular(self, limit: int) -> list[tuple[str, float]]:
        if limit <= len(self.popular) or len(self.popular) < POPULAR_DEPTH:
            return self.popular[:limit]
        return best_first(_counted(self.item_ids, self.popularity), limit)

    def hit_rows(self, hits: PointScores) -> tuple[list[int], list[float]]:
        """Rows and scores of search hits, in order; a point the table lacks is left out."""
        rows = list(map(self.row_of_point.get, hits.points))
        if None not in rows:  # the rule: a table and its index hold the same items
            return cast(list[int], rows), hits.scores
        pairs = zip(rows, hits.scores, strict=True)
        kept = [(row, score) for row, score in pairs if row is not None]
        return [row for row, _ in kept], [score for _, score in kept]


async def load_item_table(redis: RedisClient, version: str) -> ItemTable | None:
    """The version's items from Redis (`core.model_version.load_version_items`); None if it has
    none."""
    items = await load_version_items(redis, version)
    if items is None:
        return None
    parts = await load_ranking(redis, version)
    # Scaling, hashing and parsing a ranker are CPU work: off the event loop too.
    return await asyncio.to_thread(_build_table, items, parts)


def _ranking_stage(version: str, parts: RankingParts | None) -> RankingStage | None:
    if parts is None:
        return None
    if parts.ranker_text is None:
        return RankingStage(parts.neighbours, None, "no_ranker")
    try:
        ranker = Ranker(parts.ranker_text, parts.feature_version)
    except RankerMismatchError as exc:
        log.warning("ranker of version %s not served: %s", version, exc)
        return RankingStage(parts.neighbours, None, "ranker_mismatch")
    except Exception as exc:  # LightGBM's own error for a model text it cannot parse
        log.warning("ranker of version %s unreadable: %r", version, exc)
        return RankingStage(parts.neighbours, None, "ranker_unreadable")
    ranker.score(np.zeros((1, len(FEATURES)), dtype=np.float32))  # LightGBM's first call is slow
    return RankingStage(parts.neighbours, ranker, None)


def _build_table(items: VersionItems, parts: RankingParts | None) -> ItemTable:
    popularity = items.popularity if items.popularity is not None else np.zeros(len(items.item_ids))
    first_seen = parts.first_seen if parts is not None else {}
    return ItemTable(
        version=items.version,
        item_ids=items.item_ids,
        titles=items.titles,
        genres=items.genres,
        unit_vectors=unit_rows(items.vectors),
        row_of_point={point_id(item): row for row, item in enumerate(items.item_ids)},
        row_of_item=items.row_of_item,
        popularity=popularity,
        ranking=_ranking_stage(items.version, parts),
        first_seen_s=first_seen_array(items.item_ids, first_seen),
        by_genre=(
            popular_by_genre(items.genres, popularity, items.item_ids, GENRE_POPULAR_DEPTH)
            if parts is not None
            else {}
        ),
        popular=(
            best_first(_counted(items.item_ids, popularity), POPULAR_DEPTH)
            if parts is not None
            else []
        ),
    )


def _counted(item_ids: list[str], popularity: np.ndarray) -> list[tuple[str, float]]:
    """The items with any training interaction: what the version's `popular` set holds."""
    counts = popularity.tolist()
    return [(item, float(n)) for item, n in zip(item_ids, counts, strict=True) if n > 0]


POPULAR_DEPTH = 1_000


class ItemTables:
    """Tables of the last `KEEP_VERSIONS` versions asked for; `get` never waits for a load."""

    def __init__(
        self,
        redis: RedisClient,
        retry_after_s: float = RETRY_AFTER_S,
        keep: int = KEEP_VERSIONS,
    ) -> None:
        self._redis = redis
        self._retry_after_s = retry_after_s
        self._keep = keep
        self._tables: dict[str, ItemTable] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._retry_at: dict[str, float] = {}

    def get(self, version: str) -> ItemTable | None:
        """The version's table, or None while it is loading (a first call starts the load)."""
        table = self._tables.get(version)
        if (
            table is None
            and version not in self._loading
            and time.monotonic() >= self._retry_at.get(version, float("-inf"))
        ):
            self._loading[version] = asyncio.create_task(self._load(version))
        return table

    @property
    def loading(self) -> set[str]:
        """Versions whose table is being loaded now."""
        return set(self._loading)

    async def wait_loaded(self, version: str) -> ItemTable | None:
        """The table once a load in progress has finished (for start-up and tests)."""
        self.get(version)
        task = self._loading.get(version)
        if task is not None:
            await asyncio.wait({task})
        return self._tables.get(version)

    async def _load(self, version: str) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                table = await load_item_table(self._redis, version)
            if table is None:
                raise LookupError(f"no item vectors in Redis for version {version!r}")
        except Exception as exc:  # any cause: requests keep reading payloads from the index
            log.warning("item table of version %s not loaded: %r", version, exc)
            self._retry_at[version] = time.monotonic() + self._retry_after_s
            return
        finally:
            self._loading.pop(version, None)
        self._tables[version] = table
        while len(self._tables) > self._keep:
            del self._tables[next(iter(self._tables))]
        freeze_long_lived()  # the table lives as long as its version is served
        log.info(
            "item table of version %s loaded: %d items in %.0f ms",
            version,
            len(table.item_ids),
            (time.perf_counter() - started) * 1000,
        )
