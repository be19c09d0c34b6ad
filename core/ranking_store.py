"""A model version's ranking parts in Redis: the learned ranker and the item-item neighbours.

Written by `batch.publish` with the rest of the version (and removed with it: both keys are under
`core.keys.model_pattern`); read once per version by the API (`api.item_table`), which keeps them
in memory beside the version's items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from core import keys
from core.clients import RedisClient
from core.model_version import as_bytes

Neighbours = dict[str, tuple[list[str], list[float]]]  # item -> (nearest items, their scores)


@dataclass(frozen=True)
class RankingParts:
    """What a version adds for the ranking stage; a version without them is served as before."""

    ranker_text: str | None  # LightGBM's model text, or None: no learned ranker
    feature_version: int
    neighbours: Neighbours = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # how the ranker was trained
    # Each item's first interaction in the training data (epoch seconds): the item's age
    # feature (`core.ranking.FEATURES`); an item missing here is new to the version.
    first_seen: dict[str, float] = field(default_factory=dict)


async def write_ranking(redis: RedisClient, version: str, parts: RankingParts) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        if parts.ranker_text is not None:
            pipe.hset(
                keys.ranker(version),
                mapping={
                    "model": parts.ranker_text,
                    "feature_version": str(parts.feature_version),
                    "params": json.dumps(parts.params, sort_keys=True, default=str),
                },
            )
        if parts.first_seen:
            pipe.hset(keys.ranker(version), "first_seen", orjson.dumps(parts.first_seen))
        items = list(parts.neighbours.items())
        for start in range(0, len(items), 5000):
            pipe.hset(
                keys.item_neighbours(version),
                mapping={item: orjson.dumps(pair) for item, pair in items[start : start + 5000]},
            )
        await pipe.execute()


async def load_ranking(redis: RedisClient, version: str) -> RankingParts | None:
    """The version's ranking parts, or None when it has neither a ranker nor neighbours."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.ranker(version))
        pipe.hgetall(keys.item_neighbours(version))
        raw_ranker, raw_neighbours = await pipe.execute()
    if not raw_ranker and not raw_neighbours:
        return None
    ranker = {as_bytes(k).decode(): as_bytes(v).decode() for k, v in raw_ranker.items()}
    neighbours: Neighbours = {}
    for item, raw in raw_neighbours.items():
        ids, scores = orjson.loads(raw)
        neighbours[as_bytes(item).decode()] = (ids, scores)
    return RankingParts(
        ranker_text=ranker.get("model"),
        feature_version=int(ranker.get("feature_version", "0")),
        neighbours=neighbours,
        params=json.loads(ranker.get("params", "{}")),
        first_seen=orjson.loads(ranker.get("first_seen", "{}")),
    )
