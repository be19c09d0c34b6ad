"""The embedded backend: the Qdrant engine in-process (qdrant-edge), one shard per version.

Each version is a shard directory created without a write-ahead log and flushed when sealed:
such a shard can be opened by several processes at once (one per API worker), which a shard
with a WAL cannot. A `SEALED` marker file is written last, so a reader never loads a shard
that is still being written.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from core.vectors.base import (
    ItemFilter,
    ItemPoint,
    PointScores,
    SearchHit,
    VectorIndex,
    VectorIndexError,
    check_point_ids,
    hit_from_point,
    payload_selection,
    point_id,
)

_SEALED = "SEALED"
_UPSERT_BATCH = 2048
# A search runs on the caller's thread with a pool of one; a larger pool (by default sized
# from the CPU count) spreads even a one-segment search over several threads, and waking them
# cost more than the search on a 2-core machine: hot 175 against 234 µs, and 480 against 600
# µs once idle for 5 ms (ml-100k-sized shard, ad-hoc timing). The API's workers are the
# parallelism. Persisted in the shard's config, so every process that loads it uses it.
_SEARCH_THREADS = 1


def _edge_filter(item_filter: ItemFilter | None) -> qe.Filter | None:
    if item_filter is None or item_filter.is_empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if item_filter.genres:
        must.append(
            qe.FieldCondition(key="genres", match=qe.MatchAny(any=list(item_filter.genres)))
        )
    if item_filter.exclude_genres:
        must_not.append(
            qe.FieldCondition(key="genres", match=qe.MatchAny(any=list(item_filter.exclude_genres)))
        )
    if item_filter.exclude_item_ids:
        must_not.append(qe.HasIdCondition({point_id(i) for i in item_filter.exclude_item_ids}))
    return qe.Filter(must=must or None, must_not=must_not or None)


class EdgeVectorIndex(VectorIndex):
    """Versions as shard directories under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._writers: dict[str, qe.EdgeShard] = {}
        self._readers: dict[str, qe.EdgeShard] = {}

    def _path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise VectorIndexError(f"invalid version name {version!r}")
        return self.root / version

    async def create_version(self, version: str, dim: int) -> None:
        path = self._path(version)
        if path.exists():
            raise VectorIndexError(f"version {version!r} already exists at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot),
            wal_enabled=False,
            max_search_threads=_SEARCH_THREADS,
        )
        shard = qe.EdgeShard.create(str(path), config)
        shard.update(qe.UpdateOperation.create_field_index("genres", qe.PayloadSchemaType.Keyword))
        self._writers[version] = shard

    def _writer(self, version: str) -> qe.EdgeShard:
        try:
            return self._writers[version]
        except KeyError:
            raise VectorIndexError(
                f"version {version!r} is not open for writing (sealed, or created elsewhere)"
            ) from None

    async def upsert(self, version: str, points: Sequence[ItemPoint]) -> None:
        shard = self._writer(version)

        def write() -> None:
            for start in range(0, len(points), _UPSERT_BATCH):
                batch = [
                    qe.Point(point_id(p.item_id), p.vector.astype(np.float32).tolist(), p.payload)
                    for p in points[start : start + _UPSERT_BATCH]
                ]
                shard.update(qe.UpdateOperation.upsert_points(batch))

        await asyncio.to_thread(write)

    async def seal(self, version: str) -> None:
        shard = self._writer(version)

        def finish() -> None:
            shard.optimize()  # builds HNSW once enough points are in
            shard.flush()
            shard.close()
            (self._path(version) / _SEALED).write_text(version)

        await asyncio.to_thread(finish)
        del self._writers[version]

    async def drop_version(self, version: str) -> None:
        for shards in (self._writers, self._readers):
            shard = shards.pop(version, None)
            if shard is not None:
                shard.close()
        await asyncio.to_thread(shutil.rmtree, self._path(version), True)

    async def list_versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def _reader(self, version: str) -> qe.EdgeShard:
        shard = self._readers.get(version)
        if shard is None:
            path = self._path(version)
            if not (path / _SEALED).exists():
                raise VectorIndexError(f"version {version!r} is not published (no sealed shard)")
            shard = qe.EdgeShard.load(str(path))
            self._readers[version] = shard
        return shard

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
        # In-process and sub-millisecond: cheaper inline than a thread hop.
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=_edge_filter(item_filter),
            with_payload=payload_selection(payload_fields),
            with_vector=with_vectors,
        )
        points = self._reader(version).query(request)
        check_point_ids(points, version)
        return [hit_from_point(p, with_vectors) for p in points]

    async def search_points(
        self, version: str, vector: np.ndarray, k: int, item_filter: ItemFilter | None = None
    ) -> PointScores:
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=_edge_filter(item_filter),
            with_payload=False,
            with_vector=False,
        )
        points = self._reader(version).query(request)
        check_point_ids(points, version)
        # Integer ids, as `check_point_ids` made sure; one cast, not a call per hit.
        return PointScores(cast(list[int], [p.id for p in points]), [p.score for p in points])

    async def get(
        self, version: str, item_ids: Sequence[str], *, with_vectors: bool = True
    ) -> list[SearchHit]:
        records = self._reader(version).retrieve(
            [point_id(i) for i in item_ids], with_payload=True, with_vector=with_vectors
        )
        check_point_ids(records, version)
        return [hit_from_point(r, with_vectors) for r in records]

    async def count(self, version: str) -> int:
        return int(self._reader(version).info().points_count)

    def forget_readers(self, keep: set[str]) -> None:
        """Close shards of versions no longer needed (after a model switch)."""
        for version in [v for v in self._readers if v not in keep]:
            self._readers.pop(version).close()

    async def close(self) -> None:
        for shards in (self._writers, self._readers):
            for shard in shards.values():
                shard.close()
            shards.clear()
