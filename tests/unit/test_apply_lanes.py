"""How many lanes the apply process splits a batch into, by Redis topology."""

from __future__ import annotations

import pytest

from core.settings import Settings
from streams.apply_child import LANES, lanes_for

pytestmark = pytest.mark.unit


def test_one_redis_overlaps_two_lanes_and_a_cluster_keeps_one() -> None:
    assert LANES == 2
    assert lanes_for(Settings(redis_url="redis://127.0.0.1:7000/0")) == LANES
    cluster = Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True)
    assert lanes_for(cluster) == 1
