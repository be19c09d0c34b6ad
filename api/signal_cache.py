"""What one API process keeps of the stream's shared counts for about a second under the wall
clock: the merged trending list and the candidates' trending and hour-window counts. Every
ranked request needs them, they are the same for every user, and a second hardly changes them;
reading them per request was the largest share of a ranked request's CPU (packing ~1,000
arguments of ZMSCORE and HMGET, measured with py-spy under `recsys bench api --ranker`).
Under the event clock (a replay) each request reads its own time's counts and nothing is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from api.catalog import ItemStreamReads

TRENDING_CACHE_S = 1.0
ITEM_SIGNALS_CACHE_S = 1.0
# Bounds the item counts one process keeps within a second (a request adds at most its
# candidates): about 100 bytes an item, so at most ~10 MB even over a very large catalogue.
ITEM_SIGNALS_CACHE_ITEMS = 100_000


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


ItemReader = Callable[[Sequence[str]], Awaitable[ItemStreamReads]]


class ItemSignalsCache:
    """Each candidate's trending and hour-window count, as read within the last
    `ITEM_SIGNALS_CACHE_S`: a request reads only the items no request has read in that time.
    Everything kept is dropped together when the second is over, so no count is older than
    that (across a trending epoch or an hour window's turn as well)."""

    def __init__(self) -> None:
        self._since_s = float("-inf")
        self._found: dict[str, tuple[float, float]] = {}

    async def read(
        self, item_ids: Sequence[str], now_s: float, reader: ItemReader
    ) -> ItemStreamReads:
        # A clock that went back (or a second over) starts afresh.
        if not 0 <= now_s - self._since_s < ITEM_SIGNALS_CACHE_S:
            self._since_s, self._found = now_s, {}
        found = self._found
        missing = [item for item in dict.fromkeys(item_ids) if item not in found]
        if missing:
            read = await reader(missing)
            counts = zip(read.trending.tolist(), read.window_1h.tolist(), strict=True)
            fresh = dict(zip(missing, counts, strict=True))
            if len(found) + len(fresh) > ITEM_SIGNALS_CACHE_ITEMS:
                # Over the bound: keep only this request's items.
                found = self._found = {item: found[item] for item in item_ids if item in found}
            found.update(fresh)
        pairs = np.array([found[item] for item in item_ids], dtype=np.float64).reshape(-1, 2)
        return ItemStreamReads(trending=pairs[:, 0].copy(), window_1h=pairs[:, 1].copy())
