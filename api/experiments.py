"""Which experiment answers run: read from the registry (`core.experiment_store`) at start and
every `RECSYS_API_EXPERIMENT_REFRESH_S`, so that `recsys experiments create|stop` reaches every
API process without a restart. The request path reads `ExperimentWatch.current`, never Redis.

The watch also exports the running experiment's sample-ratio-mismatch p-value
(`recsys_experiment_srm_p_value`, alert `RecsysExperimentSampleRatioMismatch`), recomputed
from its counters every `SRM_REFRESH_S`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from api import metrics
from core import experiment_store
from core.clients import RedisClient
from core.experiment_report import arm_totals
from core.experiments import Experiment, sample_ratio_mismatch

log = logging.getLogger(__name__)
SRM_REFRESH_S = 60.0


class ExperimentWatch:
    def __init__(
        self,
        redis: RedisClient,
        configured: Experiment | None,
        timeout_s: float = 2.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._configured = configured
        self._timeout_s = timeout_s
        self.on_change = on_change
        self.current: Experiment | None = None
        self._srm_checked = -math.inf

    async def start(self) -> None:
        """Register the configured experiment (unless known), then read the running one. With
        Redis down, the configured one is served until the registry can be read."""
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._configured is not None:
                    outcome = await experiment_store.register_configured(
                        self._redis, self._configured, time.time()
                    )
                    log.info("configured experiment %r: %s", self._configured.id, outcome)
        except Exception as exc:
            log.warning("configured experiment not registered yet: %r", exc)
            self._set(self._configured)
        await self.refresh()

    async def refresh(self) -> None:
        """Read the running experiment; on failure keep serving the one known."""
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await experiment_store.running(self._redis)
        except Exception as exc:
            log.warning("running experiment not read (keeping %r): %r", self.current, exc)
            return
        self._set(found)
        if found is not None and time.monotonic() - self._srm_checked >= SRM_REFRESH_S:
            self._srm_checked = time.monotonic()
            await self._export_srm(found)

    def _set(self, found: Experiment | None) -> None:
        if found != self.current:
            log.info("experiment now running: %s", found.id if found else "none")
            self.current = found
            if self.on_change is not None:
                self.on_change()

    async def _export_srm(self, experiment: Experiment) -> None:
        try:
            async with asyncio.timeout(self._timeout_s * 5):
                counts = await experiment_store.read_counts(self._redis, experiment.id)
        except Exception as exc:
            log.warning("experiment counters not read for the SRM check: %r", exc)
            return
        registered = experiment_store.Registered(experiment, 0.0)
        users = [arm.counts["users"] for arm in arm_totals(registered, counts)]
        p_value = sample_ratio_mismatch(users, [arm.share for arm in experiment.arms])
        if not math.isnan(p_value):
            metrics.EXPERIMENT_SRM_P_VALUE.labels(experiment.id).set(p_value)

    async def refresh_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()
