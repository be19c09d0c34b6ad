"""`recsys bench api` gives its users the online state the stream worker would have written,
so that the benchmarked requests exclude seen items as production requests do."""

from __future__ import annotations

import pandas as pd
import pytest

from api.catalog import VersionHint, user_context
from core.clients import RedisClient
from core.settings import Settings
from recsys.bench.api import seed_histories

pytestmark = pytest.mark.integration


async def test_each_user_gets_their_newest_events_as_history(
    any_redis: RedisClient, topology_settings: Settings
) -> None:
    redis = any_redis  # on one Redis, then on a Redis Cluster
    interactions = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "a", "a", "b", "a"],
            "item_id": ["1", "2", "3", "4", "5", "6", "7"],
            "ts": [100, 500, 150, 300, 400, 50, 200],
        }
    )

    mean_length = seed_histories(topology_settings, interactions, keep=3)

    assert mean_length == pytest.approx((3 + 2) / 2)
    a = (await user_context(redis, "a", VersionHint())).state
    assert [(h.item_id, h.ts_ms) for h in a.history] == [("2", 500_000), ("5", 400_000),
                                                        ("4", 300_000)]  # fmt: skip
    assert a.events == 3
    assert [h.item_id for h in (await user_context(redis, "b", VersionHint())).state.history] == [
        "3",
        "6",
    ]
    assert (await user_context(redis, "nobody", VersionHint())).state.history == []
