"""The last-resort answer: the popular list kept in process memory, refreshed from Redis in
the background, so /recommend can still answer when Redis itself is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence

from api import catalog
from api.catalog import Candidate
from core.clients import RedisClient
from core.model_version import active_version

log = logging.getLogger(__name__)


class PopularCache:
    def __init__(self, redis: RedisClient, size: int, timeout_s: float = 2.0) -> None:
        self._redis = redis
        self.size = size
        self.timeout_s = timeout_s
        self.version: str | None = None
        self.items: list[Candidate] = []

    async def refresh(self) -> None:
        """Reload the list; on any failure keep the previous one (stale beats nothing)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                version = await active_version(self._redis)
                if version is None:
                    return
                ranked = await catalog.popular(self._redis, version, (), self.size)
                found = await catalog.payloads(self._redis, version, [i for i, _ in ranked])
        except Exception as exc:  # whatever the cause, the old list stays
            log.warning("popular list not refreshed (keeping %d items): %r", len(self.items), exc)
            return
        self.items = [Candidate.from_payload(i, s, "popular", found.get(i)) for i, s in ranked]
        self.version = version

    async def refresh_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()

    def top(
        self,
        k: int,
        genres: Sequence[str],
        exclude_genres: Sequence[str],
        exclude_ids: Collection[str],
    ) -> list[Candidate]:
        chosen: list[Candidate] = []
        for candidate in self.items:
            if len(chosen) >= k:
                break
            if candidate.item_id not in exclude_ids and catalog.passes(
                candidate, genres, exclude_genres
            ):
                chosen.append(candidate)
        return chosen
