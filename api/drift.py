"""The API's side of drift monitoring: its live histograms, the merged report and the gauges.

- `LIVE` keeps this process's window of what it serves: the scores of personalized lists
  (`observe_answer`, from `GET /recommend`) and the feature rows of ranked answers
  (`observe_features`, from `api.pipeline`). It is process-wide, like the Prometheus metrics
  it ends up in, so that the request path reaches it without a dependency; it holds counts
  only (no client), and costs O(k) bisections per answer.
- `DriftMonitor` (one per process, started in the app's lifespan) loads the active version's
  baseline (`core.drift`, stored with the version), configures `LIVE` with its bins, writes
  `LIVE`'s window into this process's field of `core.keys.DRIFT_LIVE` every
  RECSYS_DRIFT_PUBLISH_INTERVAL_S, merges every process's fields (the stream workers' event
  types, item popularity and user activity; the API processes' scores and features) and sets
  `recsys_drift_psi{distribution}`. The score distributions (`core.drift.LIVE_REFERENCED`) are
  compared with the version's live reference, which the first process to see a full window
  after RECSYS_DRIFT_SETTLE_S stores with the version (SET NX: one reference, whoever wins).
  `GET /monitoring/drift` (`api.routes.monitoring`) asks it
  for the same report on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Literal

import numpy as np
from prometheus_client import Gauge
from pydantic import BaseModel, Field

from api.models import RecommendationResponse
from core import drift, keys
from core.clients import RedisClient
from core.model_version import active_version, as_bytes
from core.ranking import FEATURES
from core.settings import Settings

log = logging.getLogger(__name__)

DRIFT_PSI = Gauge(
    "recsys_drift_psi",
    "Population stability index of a live distribution over the drift window against the "
    "active model version's training baseline (scores: against its live reference).",
    ["distribution"],
    multiprocess_mode="max",
)

# Ranked answers whose feature rows are binned: one in this many (k rows x every feature is
# a dozen NumPy calls; a sample keeps it off the request path's cost).
FEATURE_SAMPLE_EVERY = 4

API_DISTRIBUTIONS = (drift.SERVED_SCORES, *(drift.RANKER_FEATURE_PREFIX + f for f in FEATURES))


class ApiLive:
    """This process's live window of served scores and ranker features (see the module)."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.window: drift.SlidingWindow | None = None
        self._scores: drift.Bins | None = None
        self._features: list[tuple[int, str, np.ndarray]] = []  # column, name, edges
        self._ranked = 0

    def configure(
        self, version: str | None, baseline: drift.Baseline | None, window_s: float, buckets: int
    ) -> None:
        """Start afresh for `version` with `baseline`'s bins (None: observe nothing)."""
        self.version, self.window, self._scores, self._features = version, None, None, []
        if baseline is None:
            return
        found = baseline.distributions
        self.window = drift.SlidingWindow(
            baseline.sizes(API_DISTRIBUTIONS), window_s / buckets, buckets
        )
        scores = found.get(drift.SERVED_SCORES)
        self._scores = scores.bins if scores is not None else None
        for column, feature in enumerate(FEATURES):
            known = found.get(drift.RANKER_FEATURE_PREFIX + feature)
            if known is not None:
                edges = np.asarray(known.bins.edges, dtype=np.float64)
                self._features.append((column, drift.RANKER_FEATURE_PREFIX + feature, edges))

    def observe_answer(self, answer: RecommendationResponse, now: float | None = None) -> None:
        """The scores of a personalized answer's personalized items (dot products, as the
        baseline's): O(k)."""
        bins, window = self._scores, self.window
        if bins is None or window is None or answer.source != "personalized":
            return
        if answer.model_version != self.version:
            return
        now = time.time() if now is None else now
        for item in answer.items:
            if item.source == "personalized":
                window.add(drift.SERVED_SCORES, bins.index(item.score), now)

    def observe_features(self, rows: np.ndarray, now: float | None = None) -> None:
        """The feature rows (k x `FEATURES`) of a ranked answer's items, one answer in
        `FEATURE_SAMPLE_EVERY`."""
        window = self.window
        if window is None or not self._features or not len(rows):
            return
        self._ranked += 1
        if self._ranked % FEATURE_SAMPLE_EVERY:
            return
        now = time.time() if now is None else now
        for column, name, edges in self._features:
            bins = np.searchsorted(edges, rows[:, column], "right")
            window.add_counts(name, np.bincount(bins, minlength=len(edges) + 1).tolist(), now)


LIVE = ApiLive()


class BinShares(BaseModel):
    bin: str = Field(description="The bin: a category, or a range of values [low, high).")
    baseline: float = Field(
        description="Share in the bin of what the live window is compared with: the training "
        "baseline, or the live reference (`compared_with`)."
    )
    live: float = Field(description="Share of the live window in the bin.")


class DistributionDrift(BaseModel):
    distribution: str = Field(description="As the `distribution` label of recsys_drift_psi.")
    status: Literal["ok", "drift", "too_few_observations", "awaiting_reference"]
    compared_with: drift.Against = Field(
        description="training: the version's training baseline; live_reference: the first "
        "window of live traffic after RECSYS_DRIFT_SETTLE_S (score distributions, whose "
        "training side is in-sample); awaiting_reference: that window has not been seen yet."
    )
    psi: float | None = Field(
        description="Population stability index, live against what it is compared with; null "
        "below the minimum of live observations, or while awaiting the reference."
    )
    live_observations: float
    baseline_observations: int = Field(
        description="Observations behind what the live window is compared with."
    )
    bins: list[BinShares]


class DriftReport(BaseModel):
    status: Literal["ok", "drift", "no_model", "no_baseline", "no_live_data", "unavailable"] = (
        Field(
            description="drift: some distribution is above the threshold; no_baseline: the "
            "active version was published without one; no_live_data: nothing observed in the "
            "window yet; unavailable: Redis could not be read."
        )
    )
    detail: str
    model_version: str | None = None
    threshold: float
    window_s: float
    min_observations: int
    live_sources: int = Field(0, description="Worker and API processes whose windows merged.")
    distributions: list[DistributionDrift] = Field(default_factory=list)


class DriftMonitor:
    """Loads baselines, publishes this process's window, merges and reports (see the module)."""

    def __init__(self, redis: RedisClient, settings: Settings, live: ApiLive = LIVE) -> None:
        self.redis = redis
        self.settings = settings
        self.live = live
        self.source = f"api:{socket.gethostname()}:{os.getpid()}"
        self.version: str | None = None
        self.baseline: drift.Baseline | None = None
        self.reference: drift.Reference | None = None
        self._active_since = 0.0  # when this process first saw the version active
        self._exported: set[str] | None = None

    async def report(self, now: float | None = None) -> DriftReport:
        """The drift of the active version's distributions now; never raises."""
        now = time.time() if now is None else now
        settings = self.settings
        empty = DriftReport(
            status="unavailable",
            detail="",
            threshold=settings.drift_psi_threshold,
            window_s=settings.drift_window_s,
            min_observations=settings.drift_min_observations,
        )
        try:
            return await self._report(now, empty)
        except Exception as exc:
            log.warning("drift report failed: %r", exc)
            return empty.model_copy(update={"detail": f"Redis could not be read: {exc!r}"})

    async def _report(self, now: float, empty: DriftReport) -> DriftReport:
        version = await active_version(self.redis)
        if version is None:
            self._export({})
            return empty.model_copy(update={"status": "no_model", "detail": "no active version"})
        if version != self.version:
            await self._load(version)
        empty = empty.model_copy(update={"model_version": version})
        if self.baseline is None:
            self._export({})
            return empty.model_copy(
                update={
                    "status": "no_baseline",
                    "detail": "the active version was published without a drift baseline "
                    "(before drift monitoring): retrain to monitor drift",
                }
            )
        await self._publish(now)
        entries = await self._entries(now)
        live, sources = drift.merge_live(
            entries, self.baseline, version, now, self.settings.drift_window_s
        )
        reference = await self._reference(version, live, now)
        found = drift.report(self.baseline, live, self.settings.drift_min_observations, reference)
        self._export({d.name: d.psi for d in found if d.psi is not None})
        return self._as_report(empty, found, sources)

    def _as_report(
        self, empty: DriftReport, found: list[drift.DriftOf], sources: int
    ) -> DriftReport:
        threshold = self.settings.drift_psi_threshold
        distributions = []
        for d in found:
            status: Literal["ok", "drift", "too_few_observations", "awaiting_reference"] = (
                "awaiting_reference"
                if d.against == "awaiting_reference"
                else "too_few_observations"
                if d.psi is None
                else "drift"
                if d.psi > threshold
                else "ok"
            )
            bins = [
                BinShares(bin=label, baseline=base, live=live)
                for label, base, live in zip(
                    d.baseline.bins.labels(), d.baseline.shares, d.live_shares, strict=True
                )
            ]
            distributions.append(
                DistributionDrift(
                    distribution=d.name,
                    status=status,
                    compared_with=d.against,
                    psi=d.psi,
                    live_observations=d.live_count,
                    baseline_observations=d.baseline.count,
                    bins=bins,
                )
            )
        drifted = [d.distribution for d in distributions if d.status == "drift"]
        compared = [d for d in distributions if d.psi is not None]
        if drifted:
            overall, detail = "drift", f"above the threshold: {', '.join(drifted)}"
        elif compared:
            overall, detail = "ok", f"{len(compared)} distributions within the threshold"
        else:
            overall, detail = "no_live_data", "too few live observations in the window yet"
        return empty.model_copy(
            update={
                "status": overall,
                "detail": detail,
                "live_sources": sources,
                "distributions": distributions,
            }
        )

    async def _load(self, version: str) -> None:
        raw = await self.redis.get(keys.drift_baseline(version))
        self.baseline = drift.Baseline.from_json(as_bytes(raw)) if raw else None
        self.version = version
        self.reference = None
        self._active_since = time.time()
        self.live.configure(
            version, self.baseline, self.settings.drift_window_s, self.settings.drift_buckets
        )

    async def _reference(
        self, version: str, live: dict[str, list[float]], now: float
    ) -> drift.Reference | None:
        """The version's live reference: read from Redis, or captured from `live` once due."""
        if self.reference is not None:
            return self.reference
        key = keys.drift_reference(version)
        raw = await self.redis.get(key)
        settings = self.settings
        if raw is None and drift.reference_due(
            self._active_since, now, settings.drift_settle_s, settings.drift_window_s
        ):
            captured = drift.Reference.capture(live, settings.drift_min_observations, now)
            if captured is not None:
                await self.redis.set(key, captured.to_json(), nx=True)
                raw = await self.redis.get(key)  # this one's, or another process's first
        if raw is not None:
            self.reference = drift.Reference.from_json(as_bytes(raw))
        return self.reference

    async def _publish(self, now: float) -> None:
        window, version = self.live.window, self.live.version
        if window is None or version is None or not window.sizes:
            return
        entry = drift.LiveEntry(version, now, window.window_s, window.totals(now))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.DRIFT_LIVE, self.source, entry.to_json())
            pipe.expire(keys.DRIFT_LIVE, int(2 * self.settings.drift_window_s) + 60)
            await pipe.execute()

    async def _entries(self, now: float) -> list[drift.LiveEntry]:
        """Every process's entry; those older than the window (stopped processes) removed."""
        entries, stale = [], []
        for field, raw in (await self.redis.hgetall(keys.DRIFT_LIVE)).items():
            try:
                entry = drift.LiveEntry.from_json(as_bytes(raw))
            except ValueError:
                stale.append(field)
                continue
            if now - entry.written_at > self.settings.drift_window_s:
                stale.append(field)
            else:
                entries.append(entry)
        if stale:
            await self.redis.hdel(keys.DRIFT_LIVE, *stale)
        return entries

    def _export(self, values: dict[str, float]) -> None:
        if self._exported is None:  # this process's first: the gauge starts from this monitor
            if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # (no clearing across processes)
                DRIFT_PSI.clear()
            self._exported = set()
        for gone in self._exported - values.keys():
            with contextlib.suppress(KeyError):
                DRIFT_PSI.remove(gone)
        for name, value in values.items():
            DRIFT_PSI.labels(distribution=name).set(value)
        self._exported = set(values)

    async def run(self, stop: asyncio.Event) -> None:
        """Report every RECSYS_DRIFT_PUBLISH_INTERVAL_S (publishing and exporting) until `stop`."""
        while not stop.is_set():
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.drift_publish_interval_s)


# How long shutdown waits for a report in progress before cancelling it.
STOP_WAIT_S = 5.0


@contextlib.asynccontextmanager
async def drift_monitoring(redis: RedisClient, settings: Settings) -> AsyncIterator[DriftMonitor]:
    """A `DriftMonitor` reporting in the background for as long as the context is open."""
    monitor = DriftMonitor(redis, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        yield monitor
    finally:
        # Stopped between reports rather than cancelled in one: a Redis call cancelled halfway
        # can leave its connection for the client's close to wait on.
        stop.set()
        await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
