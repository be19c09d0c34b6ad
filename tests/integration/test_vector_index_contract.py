"""One contract, every backend: the embedded Qdrant engine and the server adapter (exercised
against qdrant-client's local mode, which speaks the same client API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from core.vectors import ItemFilter, ItemPoint, VectorIndex, point_id
from core.vectors.base import VectorIndexError
from core.vectors.edge import EdgeVectorIndex
from core.vectors.server import ServerVectorIndex

pytestmark = pytest.mark.integration

DIM = 8
GENRES = ("Action", "Comedy", "Drama")


def make_points(n: int = 60, seed: int = 0) -> list[ItemPoint]:
    rng = np.random.default_rng(seed)
    return [
        ItemPoint(
            item_id=f"item-{i}",
            vector=rng.standard_normal(DIM).astype(np.float32),
            payload={"item_id": f"item-{i}", "title": f"Item {i}", "genres": [GENRES[i % 3]]},
        )
        for i in range(n)
    ]


@pytest.fixture(params=["edge", "server"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    backend: VectorIndex
    if request.param == "edge":
        backend = EdgeVectorIndex(tmp_path / "qdrant")
    else:
        backend = ServerVectorIndex(AsyncQdrantClient(location=":memory:"))
    yield backend
    await backend.close()


async def publish(index: VectorIndex, version: str, points: list[ItemPoint]) -> None:
    await index.create_version(version, DIM)
    await index.upsert(version, points)
    await index.seal(version)


def brute_force(
    points: list[ItemPoint], query: np.ndarray, keep: list[bool] | None = None
) -> list[str]:
    scored = [
        (float(p.vector @ query), p.item_id)
        for i, p in enumerate(points)
        if keep is None or keep[i]
    ]
    return [item for _, item in sorted(scored, key=lambda s: -s[0])]


async def test_search_ranks_by_dot_product(index: VectorIndex) -> None:
    points = make_points()
    await publish(index, "v1", points)
    query = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    hits = await index.search("v1", query, 10)
    assert [h.item_id for h in hits] == brute_force(points, query)[:10]
    assert hits[0].score == pytest.approx(
        float(points[int(hits[0].item_id[5:])].vector @ query), rel=1e-4
    )
    assert hits[0].payload["title"] == f"Item {hits[0].item_id[5:]}"
    assert await index.count("v1") == len(points)


async def test_filters_genres_exclusions_and_seen_items(index: VectorIndex) -> None:
    points = make_points()
    await publish(index, "v1", points)
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    seen = frozenset(brute_force(points, query)[:3])

    only_comedy = await index.search("v1", query, 5, ItemFilter(genres=("Comedy",)))
    assert [h.item_id for h in only_comedy] == brute_force(
        points, query, [p.payload["genres"] == ["Comedy"] for p in points]
    )[:5]

    no_action = await index.search("v1", query, 50, ItemFilter(exclude_genres=("Action",)))
    assert all("Action" not in h.payload["genres"] for h in no_action)
    assert len(no_action) == 40

    unseen = await index.search("v1", query, 5, ItemFilter(exclude_item_ids=seen))
    assert [h.item_id for h in unseen] == brute_force(points, query)[3:8]


async def test_vectors_and_lookup_by_id(index: VectorIndex) -> None:
    points = make_points()
    await publish(index, "v1", points)
    hits = await index.search("v1", points[5].vector, 3, with_vectors=True)
    assert hits[0].vector is not None
    by_id = {p.item_id: p for p in points}
    np.testing.assert_allclose(hits[0].vector, by_id[hits[0].item_id].vector, rtol=1e-5)

    found = await index.get("v1", ["item-7", "no-such-item", "item-2"])
    assert sorted(h.item_id for h in found) == ["item-2", "item-7"]
    for hit in found:
        assert hit.vector is not None
        np.testing.assert_allclose(hit.vector, by_id[hit.item_id].vector, rtol=1e-5)


async def test_versions_are_independent_and_droppable(index: VectorIndex) -> None:
    await publish(index, "v1", make_points(seed=0))
    await publish(index, "v2", make_points(n=30, seed=1))
    assert await index.list_versions() == ["v1", "v2"]
    assert await index.count("v1") == 60
    assert await index.count("v2") == 30
    with pytest.raises(VectorIndexError):
        await index.create_version("v1", DIM)
    await index.drop_version("v1")
    assert await index.list_versions() == ["v2"]
    with pytest.raises(VectorIndexError):
        await index.search("v1", np.ones(DIM, dtype=np.float32), 3)


async def test_edge_shards_are_readable_by_another_process_only_when_sealed(tmp_path: Path) -> None:
    writer = EdgeVectorIndex(tmp_path / "qdrant")
    reader = EdgeVectorIndex(tmp_path / "qdrant")  # as a separate API worker would
    points = make_points()
    await writer.create_version("v1", DIM)
    await writer.upsert("v1", points)
    with pytest.raises(VectorIndexError, match="not published"):
        await reader.search("v1", points[0].vector, 3)
    await writer.seal("v1")
    second_reader = EdgeVectorIndex(tmp_path / "qdrant")
    assert len(await reader.search("v1", points[0].vector, 3)) == 3
    assert len(await second_reader.search("v1", points[0].vector, 3)) == 3
    for backend in (writer, reader, second_reader):
        await backend.close()


async def test_search_can_return_only_some_payload_fields(index: VectorIndex) -> None:
    points = make_points()
    await publish(index, "v1", points)
    hits = await index.search("v1", points[0].vector, 3, payload_fields=["genres"])
    assert all(set(h.payload) == {"item_id", "genres"} for h in hits)
    assert hits[0].item_id == brute_force(points, points[0].vector)[0]


async def test_search_points_ranks_and_filters_like_search_with_ids_only(
    index: VectorIndex,
) -> None:
    points = make_points()
    await publish(index, "v1", points)
    item_of = {point_id(p.item_id): p.item_id for p in points}
    query = points[3].vector
    no_comedy_unseen = ItemFilter(
        exclude_genres=("Comedy",), exclude_item_ids=frozenset({"item-0"})
    )

    found = await index.search_points("v1", query, 10, no_comedy_unseen)
    keep = [p.item_id != "item-0" and p.payload["genres"] != ["Comedy"] for p in points]
    assert [item_of[point] for point in found.points] == brute_force(points, query, keep)[:10]
    by_id = {p.item_id: p for p in points}
    for point, score in zip(found.points, found.scores, strict=True):
        assert score == pytest.approx(float(by_id[item_of[point]].vector @ query), rel=1e-5)
