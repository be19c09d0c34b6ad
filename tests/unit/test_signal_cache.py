"""What an API process keeps of the stream's shared counts (`api.signal_cache`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from api import signal_cache
from api.catalog import ItemStreamReads
from api.signal_cache import (
    ITEM_SIGNALS_CACHE_S,
    TRENDING_CACHE_S,
    ItemSignalsCache,
    TrendingCache,
)

pytestmark = pytest.mark.unit


def test_the_list_is_kept_for_its_time_and_for_its_length_only() -> None:
    cache = TrendingCache()
    assert cache.get(200, 100.0) is None
    found = [("a", 3.0), ("b", 1.0)]
    cache.put(200, 100.0, found)
    assert cache.get(200, 100.0 + TRENDING_CACHE_S / 2) == found
    assert cache.get(50, 100.0) is None  # another length is another read
    assert cache.get(200, 100.0 + TRENDING_CACHE_S) is None


class CountingReader:
    """Stands in for Redis: an item's counts are its number (trending) and its number + the
    reads so far (hour window), so a value read again is told from one kept."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def __call__(self, item_ids: Sequence[str]) -> ItemStreamReads:
        self.asked.append(list(item_ids))
        numbers = np.array([float(item[1:]) for item in item_ids])
        return ItemStreamReads(trending=numbers, window_1h=numbers + len(self.asked))


async def test_only_the_items_not_read_within_the_second_are_read() -> None:
    cache, reader = ItemSignalsCache(), CountingReader()
    first = await cache.read(["i1", "i2", "i1"], 50.0, reader)
    assert reader.asked == [["i1", "i2"]]  # each item once
    assert first.trending.tolist() == [1.0, 2.0, 1.0]
    assert first.window_1h.tolist() == [2.0, 3.0, 2.0]

    second = await cache.read(["i3", "i2"], 50.0 + ITEM_SIGNALS_CACHE_S / 2, reader)
    assert reader.asked[1:] == [["i3"]]
    assert second.trending.tolist() == [3.0, 2.0]
    assert second.window_1h.tolist() == [5.0, 3.0]  # i2 as read the first time


async def test_everything_is_read_again_once_the_second_is_over_or_the_clock_goes_back() -> None:
    cache, reader = ItemSignalsCache(), CountingReader()
    await cache.read(["i1"], 50.0, reader)
    later = await cache.read(["i1"], 50.0 + ITEM_SIGNALS_CACHE_S, reader)
    assert later.window_1h.tolist() == [3.0]
    earlier = await cache.read(["i1"], 40.0, reader)
    assert earlier.window_1h.tolist() == [4.0]
    assert len(reader.asked) == 3


async def test_the_bound_keeps_the_requests_own_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal_cache, "ITEM_SIGNALS_CACHE_ITEMS", 3)
    cache, reader = ItemSignalsCache(), CountingReader()
    await cache.read(["i1", "i2"], 50.0, reader)
    found = await cache.read(["i2", "i3", "i4"], 50.1, reader)
    assert found.trending.tolist() == [2.0, 3.0, 4.0]
    assert found.window_1h.tolist() == [3.0, 5.0, 6.0]
    await cache.read(["i1"], 50.2, reader)
    assert reader.asked[-1] == ["i1"]  # dropped at the bound: read again
