"""The server backend: a Qdrant server reached with qdrant-client, one collection per version.

Also runs against qdrant-client's local mode (`location=":memory:"`), which the contract tests
use to exercise every request this adapter makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

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

COLLECTION_PREFIX = "recsys_items_"
_UPSERT_BATCH = 1024


def _server_filter(item_filter: ItemFilter | None) -> models.Filter | None:
    if item_filter is None or item_filter.is_empty:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if item_filter.genres:
        must.append(
            models.FieldCondition(key="genres", match=models.MatchAny(any=list(item_filter.genres)))
        )
    if item_filter.exclude_genres:
        must_not.append(
            models.FieldCondition(
                key="genres", match=models.MatchAny(any=list(item_filter.exclude_genres))
            )
        )
    if item_filter.exclude_item_ids:
        must_not.append(
            models.HasIdCondition(has_id=[point_id(i) for i in item_filter.exclude_item_ids])
        )
    return models.Filter(must=must or None, must_not=must_not or None)


class ServerVectorIndex(VectorIndex):
    """Versions as collections `recsys_items_<version>`."""

    def __init__(self, client: AsyncQdrantClient) -> None:
        self.client = client

    @staticmethod
    def collection(version: str) -> str:
        return f"{COLLECTION_PREFIX}{version}"

    async def create_version(self, version: str, dim: int) -> None:
        name = self.collection(version)
        if await self.client.collection_exists(name):
            raise VectorIndexError(f"version {version!r} already exists (collection {name})")
        await self.client.create_collection(
            name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
        )
        await self.client.create_payload_index(
            name, field_name="genres", field_schema=models.PayloadSchemaType.KEYWORD
        )

    async def upsert(self, version: str, points: Sequence[ItemPoint]) -> None:
        name = self.collection(version)
        for start in range(0, len(points), _UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=point_id(p.item_id),
                    vector=p.vector.astype(np.float32).tolist(),
                    payload=p.payload,
                )
                for p in points[start : start + _UPSERT_BATCH]
            ]
            await self.client.upsert(name, points=batch, wait=True)

    async def seal(self, version: str) -> None:
        # Upserts were acknowledged with wait=True, so the data is durable and searchable;
        # the server builds HNSW in the background without hiding any point.
        if not await self.client.collection_exists(self.collection(version)):
            raise VectorIndexError(f"version {version!r} does not exist")

    async def drop_version(self, version: str) -> None:
        await self.client.delete_collection(self.collection(version))

    async def list_versions(self) -> list[str]:
        response = await self.client.get_collections()
        names = [c.name for c in response.collections if c.name.startswith(COLLECTION_PREFIX)]
        return sorted(n.removeprefix(COLLECTION_PREFIX) for n in names)

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
        points = await self._query(
            version, vector, k, item_filter, payload_selection(payload_fields), with_vectors
        )
        return [hit_from_point(p, with_vectors) for p in points]

    async def _query(
        self,
        version: str,
        vector: np.ndarray,
        k: int,
        item_filter: ItemFilter | None,
        with_payload: Any,
        with_vectors: bool,
    ) -> list[Any]:
        try:
            response = await self.client.query_points(
                self.collection(version),
                query=np.asarray(vector, dtype=np.float32).tolist(),
                query_filter=_server_filter(item_filter),
                limit=k,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
        except (UnexpectedResponse, ValueError) as exc:
            raise VectorIndexError(f"search in version {version!r} failed: {exc}") from exc
        check_point_ids(response.points, version)
        return list(response.points)

    async def search_points(
        self, version: str, vector: np.ndarray, k: int, item_filter: ItemFilter | None = None
    ) -> PointScores:
        points = await self._query(version, vector, k, item_filter, False, False)
        # Integer ids, as `check_point_ids` made sure; one cast, not a call per hit.
        return PointScores(cast(list[int], [p.id for p in points]), [p.score for p in points])

    async def get(
        self, version: str, item_ids: Sequence[str], *, with_vectors: bool = True
    ) -> list[SearchHit]:
        try:
            records = await self.client.retrieve(
                self.collection(version),
                ids=[point_id(i) for i in item_ids],
                with_payload=True,
                with_vectors=with_vectors,
            )
        except (UnexpectedResponse, ValueError) as exc:
            raise VectorIndexError(f"lookup in version {version!r} failed: {exc}") from exc
        check_point_ids(records, version)
        return [hit_from_point(r, with_vectors) for r in records]

    async def count(self, version: str) -> int:
        result = await self.client.count(self.collection(version), exact=True)
        return int(result.count)

    async def close(self) -> None:
        await self.client.close()
