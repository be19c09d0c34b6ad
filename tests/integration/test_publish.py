"""Publishing a model version into the embedded Qdrant engine and a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from batch.publish import ModelArtifacts, publish
from core import keys
from core.model_version import (
    active_version,
    as_bytes,
    batch_user_vector,
    item_vector,
    model_meta,
    vector_from_bytes,
)
from core.vectors.edge import EdgeVectorIndex

pytestmark = pytest.mark.integration

GENRES = ("Action", "Comedy", "Drama")


def artifacts(seed: int = 0, n_items: int = 40, n_users: int = 25, dim: int = 8) -> ModelArtifacts:
    rng = np.random.default_rng(seed)
    return ModelArtifacts(
        model="als",
        dataset="unit",
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        user_vectors=rng.standard_normal((n_users, dim)).astype(np.float32),
        item_vectors=rng.standard_normal((n_items, dim)).astype(np.float32),
        item_payloads=[
            {"title": f"Item {i}", "genres": [GENRES[i % 3]], "year": 1990 + i}
            for i in range(n_items)
        ],
        popularity=np.arange(n_items)[::-1].copy(),  # i0 most popular; the last item never seen
        trained_until=1_700_000_000,
        params={"factors": dim},
    )


async def test_publish_writes_every_store_then_switches(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    index = EdgeVectorIndex(tmp_path / "qdrant")
    art = artifacts()
    version = await publish(art, index, redis, tmp_path / "models")

    assert await active_version(redis) == version
    meta = await model_meta(redis, version)
    assert meta is not None
    assert (meta.model, meta.dim, meta.n_items, meta.n_users) == ("als", 8, 40, 25)
    assert meta.trained_until == 1_700_000_000

    vec = await item_vector(redis, version, "i7")
    assert vec is not None
    np.testing.assert_array_equal(vec, art.item_vectors[7])
    user = await batch_user_vector(redis, version, "u3")
    assert user is not None
    np.testing.assert_array_equal(user, art.user_vectors[3])

    top = await redis.zrevrange(keys.popular(version), 0, 2)
    assert top == [b"i0", b"i1", b"i2"]
    assert await redis.zscore(keys.popular(version), "i39") is None  # never interacted
    comedy = await redis.zrevrange(keys.popular_by_genre(version, "Comedy"), 0, -1)
    assert comedy[0] == b"i1"
    assert all(int(i[1:]) % 3 == 1 for i in comedy)
    payload = json.loads(as_bytes(await redis.hget(keys.item_payloads(version), "i4")))
    assert payload == {"title": "Item 4", "genres": ["Comedy"], "year": 1994, "popularity": 35}
    gram = vector_from_bytes(as_bytes(await redis.get(keys.gram_matrix(version)))).reshape(8, 8)
    np.testing.assert_allclose(gram, art.item_vectors.T @ art.item_vectors, rtol=1e-4, atol=1e-4)

    hits = await index.search(version, art.user_vectors[0], 5)
    expected = np.argsort(-(art.item_vectors @ art.user_vectors[0]))[:5]
    assert [h.item_id for h in hits] == [f"i{i}" for i in expected]
    assert hits[0].payload["model_version"] == version

    saved = np.load(tmp_path / "models" / version / "model.npz", allow_pickle=False)
    np.testing.assert_array_equal(saved["item_vectors"], art.item_vectors)
    assert list(saved["item_ids"][:2]) == ["i0", "i1"]
    await index.close()


async def test_old_versions_are_removed_but_never_the_active(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    index = EdgeVectorIndex(tmp_path / "qdrant")
    versions = [
        await publish(artifacts(seed=s), index, redis, tmp_path / "models", keep_versions=2)
        for s in range(3)
    ]
    assert await active_version(redis) == versions[-1]
    assert await index.list_versions() == sorted(versions[1:])
    assert not (tmp_path / "models" / versions[0]).exists()
    assert await redis.exists(keys.item_vectors(versions[0])) == 0
    assert await redis.exists(keys.item_vectors(versions[1])) == 1
    leftovers = [k async for k in redis.scan_iter(match=keys.model_pattern(versions[0]))]
    assert leftovers == []
    await index.close()


async def test_reader_during_publish_never_sees_a_mixed_or_empty_version(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    writer = EdgeVectorIndex(tmp_path / "qdrant")
    reader = EdgeVectorIndex(tmp_path / "qdrant")  # like an API worker in another process
    first = await publish(artifacts(seed=1, n_items=3000), writer, redis, tmp_path / "models")
    query = np.ones(8, dtype=np.float32)
    observed: list[str] = []
    done = asyncio.Event()

    async def read_until_done() -> None:
        while not done.is_set():
            version = await active_version(redis)
            assert version is not None
            hits = await reader.search(version, query, 20)
            assert len(hits) == 20
            assert {h.payload["model_version"] for h in hits} == {version}
            meta = await model_meta(redis, version)
            assert meta is not None
            assert meta.n_items == await reader.count(version)
            observed.append(version)
            await asyncio.sleep(0)

    reading = asyncio.create_task(read_until_done())
    second = await publish(artifacts(seed=2, n_items=3000), writer, redis, tmp_path / "models")
    await asyncio.sleep(0.05)
    done.set()
    await reading
    assert observed[0] == first
    assert observed[-1] == second
    assert set(observed) == {first, second}
    await writer.close()
    await reader.close()
