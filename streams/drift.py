"""The stream worker's live drift histograms: event types, item popularity and genres, user
activity, and the scores of what users did (`event_scores`: each event's item against the
user's vector just before it, as the applier computed it).

Fed by `streams.processor.EventProcessor.apply` with every applied batch (in the apply process),
binned with the active version's baseline (`core.drift`, stored with the version); every
RECSYS_DRIFT_PUBLISH_INTERVAL_S the window's counts are written as this process's field of
`core.keys.DRIFT_LIVE`, which the API merges (`api.drift`). Nothing is observed while the
active version has no baseline. Drift is monitoring, never a reason to hold up a batch: a
failing read or write is logged and tried again later.

Cost: a few dictionary lookups and one bisection per event, and one Redis write per interval.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

import numpy as np

from core import drift, keys
from core.clients import RedisClient
from core.model_version import as_bytes
from core.settings import Settings
from streams.applier import SourcedEvent
from streams.model_cache import ActiveModel, ModelCache

log = logging.getLogger(__name__)


class WorkerDrift:
    """One apply process's windows. `observe` is called once per applied batch."""

    def __init__(self, redis: RedisClient, settings: Settings, source: str | None = None) -> None:
        self.redis = redis
        self.window_s = settings.drift_window_s
        self.buckets = settings.drift_buckets
        self.publish_interval_s = settings.drift_publish_interval_s
        self.source = source or f"worker:{socket.gethostname()}:{os.getpid()}"
        self.version: str | None = None  # the version whose baseline is loaded (or absent)
        self.baseline: drift.Baseline | None = None
        self.window: drift.SlidingWindow | None = None
        self.activity: drift.ActivityCounter | None = None
        self.popularity: dict[str, float] = {}
        self.types: frozenset[str] = frozenset()
        self._published_at = float("-inf")

    async def observe(
        self,
        events: Sequence[SourcedEvent],
        models: ModelCache,
        event_scores: Sequence[float] = (),
        now: float | None = None,
    ) -> None:
        """Count `events` (applied with the active version of `models`) and their
        `event_scores` (`streams.applier.BatchOutcome`); publish when due."""
        now = time.time() if now is None else now
        try:
            model = await models.get()
            if model is None:
                return
            if model.version != self.version:
                await self._load(model.version)
            if self.baseline is None or self.window is None:
                return
            self._count(events, model, now)
            self._count_scores(event_scores, now)
            if now - self._published_at >= self.publish_interval_s:
                await self.publish(now)
        except Exception:
            log.exception("drift monitoring failed for this batch (the batch is applied)")

    def _count(self, events: Sequence[SourcedEvent], model: ActiveModel, now: float) -> None:
        assert self.baseline is not None
        assert self.window is not None
        distributions = self.baseline.distributions
        types = distributions.get(drift.EVENT_TYPES)
        popular = distributions.get(drift.ITEM_POPULARITY)
        genres = distributions.get(drift.ITEM_GENRES)
        for sourced in events:
            event = sourced.event
            if event.event_type not in self.types:
                continue  # impressions, and types training did not read
            if types is not None:
                self.window.add(drift.EVENT_TYPES, types.bins.index(event.event_type), now)
            if popular is not None:
                item = getattr(event, "item_id", "")
                count = self.popularity.get(item, 0.0)
                self.window.add(drift.ITEM_POPULARITY, popular.bins.index(count), now)
            if genres is not None:
                for genre in model.genres(getattr(event, "item_id", "")):
                    self.window.add(drift.ITEM_GENRES, genres.bins.index(genre), now)
            self._count_activity(self.activity_of(event.user_id, now))

    def _count_scores(self, event_scores: Sequence[float], now: float) -> None:
        assert self.baseline is not None
        assert self.window is not None
        scores = self.baseline.distributions.get(drift.EVENT_SCORES)
        if scores is not None and event_scores:
            counts = scores.bins.counts(np.asarray(event_scores, dtype=np.float64))
            self.window.add_counts(drift.EVENT_SCORES, list(counts), now)

    def activity_of(self, user_id: str, now: float) -> tuple[float, list[int]] | None:
        return None if self.activity is None else self.activity.observe(user_id, now)

    def _count_activity(self, closed: tuple[float, list[int]] | None) -> None:
        activity = self.baseline.distributions.get(drift.USER_ACTIVITY) if self.baseline else None
        if closed is None or activity is None or self.window is None:
            return
        start, per_user = closed
        counts = activity.bins.counts(np.asarray(per_user, dtype=np.float64))
        self.window.add_counts(drift.USER_ACTIVITY, list(counts), start)

    async def publish(self, now: float) -> None:
        """Write this process's window into `DRIFT_LIVE` (its own field)."""
        if self.version is None or self.window is None:
            return
        if self.activity is not None:
            self._count_activity(self.activity.close(now))
        entry = drift.LiveEntry(self.version, now, self.window.window_s, self.window.totals(now))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.DRIFT_LIVE, self.source, entry.to_json())
            # Gone a while after the last process stopped writing.
            pipe.expire(keys.DRIFT_LIVE, int(2 * self.window_s) + 60)
            await pipe.execute()
        self._published_at = now

    async def _load(self, version: str) -> None:
        raw = await self.redis.get(keys.drift_baseline(version))
        baseline = drift.Baseline.from_json(as_bytes(raw)) if raw else None
        popularity: dict[str, float] = {}
        if baseline is not None and drift.ITEM_POPULARITY in baseline.distributions:
            pairs = await self.redis.zrange(keys.popular(version), 0, -1, withscores=True)
            popularity = {as_bytes(p[0]).decode(): float(p[1]) for p in pairs}
        self.version, self.baseline, self.popularity = version, baseline, popularity
        self.window = self.activity = None
        self._published_at = float("-inf")
        if baseline is None:
            log.info("model version %s has no drift baseline: drift is not monitored", version)
            return
        self.types = frozenset(baseline.event_types)
        self.window = drift.SlidingWindow(
            baseline.sizes(drift.WORKER_DISTRIBUTIONS),
            self.window_s / self.buckets,
            self.buckets,
        )
        self.activity = drift.ActivityCounter(baseline.activity_period_s)
