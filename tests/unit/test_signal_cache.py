"""What an API process keeps of the stream's shared counts (`api.signal_cache`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from api import signal_cache
from api.catalog import ItemStreamReads
from api.signal_cache import (
    ITEM_SIGNALS_KEEP_S,
    ITEM_SIGNALS_MAX_AGE_S,
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
    """Stands in for Redis: an item's trending count is its number, its hour-window count its
    number plus the reads so far, so a value read again is told from one kept."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def __call__(self, item_ids: Sequence[str], now_s: float) -> ItemStreamReads:
        self.asked.append(list(item_ids))
        numbers = np.array([float(item[1:]) for item in item_ids])
        return ItemStreamReads(trending=numbers, window_1h=numbers + len(self.asked))


async def test_a_request_reads_only_the_items_it_lacks() -> None:
    cache, reader = ItemSignalsCache(), CountingReader()
    first = await cache.read(["i1", "i2", "i1"], 50.0, reader)
    assert reader.asked == [["i1", "i2"]]  # each item once
    assert first.trending.tolist() == [1.0, 2.0, 1.0]
    assert first.window_1h.tolist() == [2.0, 3.0, 2.0]

    second = await cache.read(["i3", "i2"], 50.5, reader)
    assert reader.asked[1:] == [["i3"]]
    assert second.trending.tolist() == [3.0, 2.0]
    assert second.window_1h.tolist() == [5.0, 3.0]  # i2 as read the first time


async def test_counts_too_old_or_from_the_future_are_read_again() -> None:
    cache, reader = ItemSignalsCache(), CountingReader()
    await cache.read(["i1"], 50.0, reader)
    later = await cache.read(["i1"], 50.0 + ITEM_SIGNALS_MAX_AGE_S, reader)
    assert later.window_1h.tolist() == [3.0]
    earlier = await cache.read(["i1"], 40.0, reader)  # the clock went back
    assert earlier.window_1h.tolist() == [4.0]
    assert len(reader.asked) == 3


async def test_a_refresh_rereads_what_requests_asked_for_and_forgets_the_rest() -> None:
    cache, reader = ItemSignalsCache(), CountingReader()
    await cache.read(["i1", "i2"], 50.0, reader)
    await cache.read(["i2"], 50.0 + ITEM_SIGNALS_MAX_AGE_S / 2, reader)  # kept: no read
    assert await cache.refresh(50.0 + ITEM_SIGNALS_KEEP_S + 0.1, reader) == 1
    assert reader.asked[-1] == ["i2"]
    assert len(cache) == 1  # i1: no request asked for it within the time kept
    # The refreshed value serves requests, with no read of their own, past the first read's age.
    now_s = 50.0 + ITEM_SIGNALS_KEEP_S + 0.2
    found = await cache.read(["i2"], now_s, reader)
    assert found.window_1h.tolist() == [2.0 + 2]  # the second read: the refresh's
    assert len(reader.asked) == 2


async def test_the_refresh_reads_in_chunks_the_most_recently_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signal_cache, "ITEM_SIGNALS_REFRESH_ITEMS", 3)
    monkeypatch.setattr(signal_cache, "ITEM_SIGNALS_REFRESH_CHUNK", 2)
    cache, reader = ItemSignalsCache(), CountingReader()
    for n in range(1, 6):
        await cache.read([f"i{n}"], 50.0 + n / 10, reader)
    assert await cache.refresh(51.0, reader) == 3
    assert reader.asked[5:] == [["i5", "i4"], ["i3"]]


async def test_the_bound_keeps_the_requests_own_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal_cache, "ITEM_SIGNALS_CACHE_ITEMS", 3)
    cache, reader = ItemSignalsCache(), CountingReader()
    await cache.read(["i1", "i2"], 50.0, reader)
    found = await cache.read(["i2", "i3", "i4"], 50.1, reader)
    assert found.trending.tolist() == [2.0, 3.0, 4.0]
    assert found.window_1h.tolist() == [3.0, 5.0, 6.0]
    await cache.read(["i1"], 50.2, reader)
    assert reader.asked[-1] == ["i1"]  # dropped at the bound: read again


async def test_a_failed_refresh_is_retried_on_the_next_round() -> None:
    cache, calls = ItemSignalsCache(), CountingReader()
    await cache.read(["i1"], time.time(), calls)
    failures = 0
    reread = asyncio.Event()

    async def flaky(item_ids: Sequence[str], now_s: float) -> ItemStreamReads:
        nonlocal failures
        if failures < 1:
            failures += 1
            raise ConnectionError("redis away")
        reread.set()
        return await calls(item_ids, now_s)

    task = asyncio.create_task(cache.refresh_every(0.01, flaky, time.time))
    try:
        async with asyncio.timeout(5):
            await reread.wait()
    finally:
        task.cancel()
    assert failures == 1
    assert calls.asked[1] == ["i1"]
