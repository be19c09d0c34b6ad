"""Train the served model on a small dataset, publish it, and read it back as serving will."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis.asyncio as aioredis

from batch.data import Dataset
from batch.publish import publish
from batch.train import to_artifacts, train
from core import keys
from core.model_version import active_version, batch_user_vector, model_meta
from core.vectors import ItemFilter
from core.vectors.edge import EdgeVectorIndex

pytestmark = pytest.mark.integration


def two_taste_dataset() -> Dataset:
    """Users 0-29 only touch Comedy items, users 30-59 only Drama; one Drama item is unseen."""
    rng = np.random.default_rng(7)
    items = pd.DataFrame(
        {
            "item_id": [f"c{i}" for i in range(20)] + [f"d{i}" for i in range(21)],
            "title": [f"Comedy {i}" for i in range(20)] + [f"Drama {i}" for i in range(21)],
            "genres": [("Comedy",)] * 20 + [("Drama",)] * 21,
            "year": pd.array([2000] * 41, dtype="Int64"),
        }
    )
    rows: list[tuple[str, str, int, str, float]] = []
    for user in range(60):
        prefix = "c" if user < 30 else "d"
        for item in rng.choice(20, size=8, replace=False):
            rows.append((f"u{user}", f"{prefix}{item}", 1_700_000_000 + len(rows), "rating", 1.0))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type", "weight"])
    interactions["weight"] = interactions["weight"].astype(np.float32)
    return Dataset(name="two-tastes", interactions=interactions, items=items)


async def test_trained_als_is_published_and_serves_the_users_taste(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    dataset = two_taste_dataset()
    trained = train(
        dataset,
        "als",
        {"factors": 4, "iterations": 10, "random_state": 1, "regularization": 0.05, "alpha": 10.0},
    )
    artifacts = to_artifacts(trained, dataset.name, "als")
    assert len(artifacts.item_ids) == 41  # the never-interacted item is in the catalog too
    index = EdgeVectorIndex(tmp_path / "qdrant")
    version = await publish(artifacts, index, redis, tmp_path / "models")

    assert await active_version(redis) == version
    meta = await model_meta(redis, version)
    assert meta is not None
    assert meta.trained_until == int(dataset.interactions["ts"].max())
    assert meta.params["factors"] == 4

    comedy_fan = await batch_user_vector(redis, version, "u3")
    assert comedy_fan is not None
    seen = frozenset(dataset.interactions.query("user_id == 'u3'")["item_id"])
    hits = await index.search(version, comedy_fan, 5, ItemFilter(exclude_item_ids=seen))
    assert [h.payload["genres"] for h in hits] == [["Comedy"]] * 5
    assert not seen & {h.item_id for h in hits}

    drama_only = await index.search(version, comedy_fan, 3, ItemFilter(genres=("Drama",)))
    assert all(h.payload["genres"] == ["Drama"] for h in drama_only)
    payload = await redis.hget(keys.item_payloads(version), "d20")
    assert payload is not None  # metadata of an item nobody interacted with is published
    await index.close()


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="servable models: als, two-tower"):
        train(two_taste_dataset(), "nope")
