"""The ranking stage's per-process trending list (`api.catalog.TrendingCache`)."""

from __future__ import annotations

import pytest

from api.catalog import TRENDING_CACHE_S, TrendingCache

pytestmark = pytest.mark.unit


def test_the_list_is_kept_for_its_time_and_for_its_length_only() -> None:
    cache = TrendingCache()
    assert cache.get(200, 100.0) is None
    found = [("a", 3.0), ("b", 1.0)]
    cache.put(200, 100.0, found)
    assert cache.get(200, 100.0 + TRENDING_CACHE_S / 2) == found
    assert cache.get(50, 100.0) is None  # another length is another read
    assert cache.get(200, 100.0 + TRENDING_CACHE_S) is None
