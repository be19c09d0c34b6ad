"""What one API process keeps of the stream's shared counts under the wall clock: the merged
trending list, and the candidates' trending and hour-window counts. Every ranked request needs
them, they are the same for every user, and a second hardly changes them; reading them per
request was the largest share of a ranked request's CPU (packing ~1,000 arguments of ZMSCORE
and HMGET, measured with py-spy under `recsys bench api --ranker`), and its second Redis round
trip. Under the event clock (a replay) each request reads its own time's counts; nothing is kept.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from api.catalog import ItemStreamReads

log = logging.getLogger(__name__)

TRENDING_CACHE_S = 1.0
# An item's counts are re-read in the background every ITEM_SIGNALS_REFRESH_S while requests
# asked for it within ITEM_SIGNALS_KEEP_S; a request reads itself the counts it lacks or that
# are older than ITEM_SIGNALS_MAX_AGE_S (a refresher that fell behind or cannot reach Redis).
ITEM_SIGNALS_REFRESH_S = 1.0
ITEM_SIGNALS_MAX_AGE_S = 3.0
ITEM_SIGNALS_KEEP_S = 10.0
# Bounds on what one process keeps (about 150 bytes an item, so ~15 MB at most over a very
# large catalogue) and re-reads each second (the most recently asked for, in chunks).
ITEM_SIGNALS_CACHE_ITEMS = 100_000
ITEM_SIGNALS_REFRESH_ITEMS = 20_000
ITEM_SIGNALS_REFRESH_CHUNK = 1_000


class TrendingCache:
    """The merged trending list of the ranking stage: otherwise every request reads two sorted
    sets per item shard (32 of a ranked request's ~70 Redis commands at 16 shards)."""

    def __init__(self) -> None:
        self._found: tuple[float, int, list[tuple[str, float]]] | None = None

    def get(self, limit: int, now_s: float) -> list[tuple[str, float]] | None:
        found = self._found
        if found is None or found[1] != limit or now_s - found[0] >= TRENDING_CACHE_S:
            return None
        return found[2]

    def put(self, limit: int, now_s: float, trending: list[tuple[str, float]]) -> None:
        self._found = (now_s, limit, trending)


# Reads the counts of the given items as of a time (`api.catalog.item_stream_reads`).
_PENDING: list[float] = []  # an item being read by this request (a placeholder, never kept)

ItemReader = Callable[[Sequence[str], float], Awaitable[ItemStreamReads]]


class ItemSignalsCache:
    """Each candidate's trending and hour-window count: a request reads from Redis only the
    items it lacks (or holds too old); `refresh` keeps the ones requests ask for current."""

    def __init__(self) -> None:
        # item -> [trending, hour-window count, read at (s), last asked at (s)]
        self._found: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._found)

    async def read(
        self, item_ids: Sequence[str], now_s: float, reader: ItemReader
    ) -> ItemStreamReads:
        found = self._found
        entries: dict[str, list[float]] = {}  # this request's, whatever happens meanwhile
        missing = []
        oldest_s = now_s - ITEM_SIGNALS_MAX_AGE_S
        for item in item_ids:
            entry = found.get(item)
            if entry is not None and oldest_s < entry[2] <= now_s:
                entry[3] = now_s
                entries[item] = entry
            elif item not in entries:
                missing.append(item)
                entries[item] = _PENDING
        if missing:
            read = await reader(missing, now_s)
            counts = zip(read.trending.tolist(), read.window_1h.tolist(), strict=True)
            fresh = {
                item: [t, w, now_s, now_s] for item, (t, w) in zip(missing, counts, strict=True)
            }
            entries.update(fresh)
            found = self._found  # a refresh may have replaced it during the read
            if len(found) + len(fresh) > ITEM_SIGNALS_CACHE_ITEMS:
                self._found = dict(entries)  # over the bound: keep only this request's items
            else:
                found.update(fresh)
        n = len(item_ids)
        rows = [entries[item] for item in item_ids]
        return ItemStreamReads(
            trending=np.fromiter((row[0] for row in rows), np.float64, n),
            window_1h=np.fromiter((row[1] for row in rows), np.float64, n),
        )

    async def refresh(self, now_s: float, reader: ItemReader) -> int:
        """Re-read the counts of the items asked for within `ITEM_SIGNALS_KEEP_S` (the most
        recent `ITEM_SIGNALS_REFRESH_ITEMS` of them) and forget the others; how many were
        read."""
        found = self._found
        kept = {item: e for item, e in found.items() if 0 <= now_s - e[3] < ITEM_SIGNALS_KEEP_S}
        self._found = kept
        due = list(kept)
        if len(due) > ITEM_SIGNALS_REFRESH_ITEMS:
            due = heapq.nlargest(ITEM_SIGNALS_REFRESH_ITEMS, due, key=lambda item: kept[item][3])
        for start in range(0, len(due), ITEM_SIGNALS_REFRESH_CHUNK):
            chunk = due[start : start + ITEM_SIGNALS_REFRESH_CHUNK]
            read = await reader(chunk, now_s)
            counts = zip(read.trending.tolist(), read.window_1h.tolist(), strict=True)
            for item, (trending, window) in zip(chunk, counts, strict=True):
                entry = self._found.get(item)
                if entry is not None:
                    entry[0], entry[1], entry[2] = trending, window, now_s
        return len(due)

    async def refresh_every(
        self, interval_s: float, reader: ItemReader, clock: Callable[[], float]
    ) -> None:
        """`refresh` every `interval_s` until cancelled; a failed read is logged and the next
        round tries again (requests read for themselves what grows too old meanwhile)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh(clock(), reader)
            except Exception as exc:  # Redis away: requests fall back on their own reads
                log.warning("refreshing the candidates' stream counts failed: %r", exc)
