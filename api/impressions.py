"""Recording /recommend answers as impressions, off the request path.

The route hands each answer to `ImpressionRecorder.record`, which only samples it and puts it
in a bounded queue (never waits); one background task turns queued answers into impression
events and publishes them in batches. When Kafka is slow or down the answers are no slower: the
queue fills, and what does not fit, or cannot be sent, is dropped and counted
(`recsys_api_impressions_dropped_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from api import metrics
from api.models import RecommendationResponse
from api.publisher import EventPublisher, KafkaUnavailableError
from api.recommender import RecommendQuery
from core.settings import Settings
from schemas.impressions import IMPRESSION_SCHEMA_VERSION
from schemas.topics import IMPRESSION_TOPIC

log = logging.getLogger(__name__)
# How long shutdown waits for the queued impressions to be sent.
FLUSH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Shown:
    ts: datetime
    query: RecommendQuery
    answer: RecommendationResponse


def encode_shown(shown: _Shown) -> bytes:
    """The impression of an answer as `schemas.impressions.ImpressionEvent` JSON, written
    directly: building the models first costs five times as much, on the event loop that
    answers requests (tests decode what this writes with the schema)."""
    answer, query = shown.answer, shown.query
    body: dict[str, object] = {
        "event_type": "impression",
        "schema_version": IMPRESSION_SCHEMA_VERSION,
        "recommendation_id": str(answer.recommendation_id),
        "user_id": answer.user_id,
        "ts": shown.ts.isoformat().replace("+00:00", "Z"),
        "source": answer.source,
        "items": [
            {
                "item_id": item.item_id,
                "position": position,
                "source": item.source or answer.source,
                "score": item.score,
            }
            for position, item in enumerate(answer.items)
        ],
        "request": {
            "k": query.k,
            "diversity": query.diversity,
            "genres": list(query.genres),
            "exclude_genres": list(query.exclude_genres),
            "excluded_ids": len(query.exclude_ids),
            "explain": query.explain,
        },
    }
    if answer.model_version is not None:
        body["model_version"] = answer.model_version
    if answer.reason is not None:
        body["reason"] = answer.reason
    if answer.variant is not None:
        body["experiment"], body["variant"] = answer.experiment, answer.variant
    return orjson.dumps(body)


class ImpressionRecorder:
    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.sample = settings.api_impressions_sample
        self.batch_size = settings.api_impressions_batch
        self.linger_s = settings.api_impressions_linger_ms / 1000
        self.publisher = publisher
        self._draw = draw
        self._queue: asyncio.Queue[_Shown] = asyncio.Queue(settings.api_impressions_queue)
        self._task: asyncio.Task[None] | None = None

    def record(self, query: RecommendQuery, answer: RecommendationResponse) -> None:
        """Queue `answer` for recording if sampled; never waits, never raises."""
        if self.sample <= 0 or (self.sample < 1 and self._draw() >= self.sample):
            return
        try:
            self._queue.put_nowait(_Shown(datetime.now(UTC), query, answer))
        except asyncio.QueueFull:
            metrics.IMPRESSIONS_DROPPED.labels("queue_full").inc()

    def start(self) -> None:
        if self._task is None and self.sample > 0:
            self._task = asyncio.create_task(self._send_forever(), name="impressions")

    async def _send_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Linger: one send per interval (and one produce request) rather than one per
            # answer, so recording wakes the event loop, and Kafka, far less often.
            if self.linger_s > 0 and self._queue.qsize() < self.batch_size:
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send(self, batch: list[_Shown]) -> None:
        try:
            messages = []
            for shown in batch:
                messages.append((shown.answer.user_id.encode(), encode_shown(shown)))
            await self.publisher.publish_raw(IMPRESSION_TOPIC, messages)
        except KafkaUnavailableError:
            metrics.IMPRESSIONS_DROPPED.labels("kafka_unavailable").inc(len(batch))
            return
        except asyncio.CancelledError:  # shutting down mid-send: lost, and counted as such
            metrics.IMPRESSIONS_DROPPED.labels("shutdown").inc(len(batch))
            raise
        except Exception:  # a bug here must not stop recording for good
            log.exception("recording %d impressions failed", len(batch))
            metrics.IMPRESSIONS_DROPPED.labels("error").inc(len(batch))
            return
        metrics.IMPRESSIONS_SENT.inc(len(batch))

    async def close(self) -> None:
        """Send what is queued if Kafka takes it within `FLUSH_TIMEOUT_S`, then stop; what is
        left is counted as dropped."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if left := self._queue.qsize():
            metrics.IMPRESSIONS_DROPPED.labels("shutdown").inc(left)
