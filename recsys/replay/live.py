"""P3 through the live stack: Kafka -> `recsys worker` -> Redis -> `recsys serve`.

For every replayed event the harness asks GET /recommend for the user (seen(u) excluded with
`exclude_ids`, MMR off and at the default diversity), scores the answer, then publishes the
event to Kafka. In synchronous mode it waits until the user's state records the event's offset
as applied (`core.keys`, field `o`) before going on; in asynchronous mode it publishes at a
fixed rate and records, per event, the time from publish until the user's state recorded it.
Each configuration gets fresh Kafka and Redis, so no state leaks from one into the next.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
from aiokafka import AIOKafkaProducer

from api.routes.filters import MAX_EXCLUDED_IDS
from batch.evaluation.online_updates import OnlineUpdateParams
from batch.evaluation.prequential import (
    PrequentialScores,
    PrequentialSplit,
    ReplayEvent,
    rank_in_list,
    replay_events,
)
from core import keys
from core.clients import RedisClient, kafka_producer, redis_client_for
from core.settings import Settings
from core.user_state import load_states
from schemas import encode_event, event_key, new_event, topic_for
from schemas.events import stream_event_type

POLL_S = 0.0005  # watermark polling while waiting for one event (sync mode)

Progress = Callable[[int], None]  # called with the number of events replayed so far


class ReplayError(RuntimeError):
    """The live replay cannot go on (an API error, a worker that stopped applying events)."""


@dataclass(frozen=True)
class LiveConfig:
    name: str
    updates: OnlineUpdateParams | None  # None: stream updates off (no worker runs)
    rate: float | None = None  # events/s in asynchronous mode; None: synchronous
    # The two-stage path: the version carries the learned ranking stage, the API reads the
    # stream's counts at the user's event time; `ranker` off keeps the sources' order.
    two_stage: bool = False
    ranker: bool = True


@dataclass
class LiveOutcome:
    scores: dict[float, PrequentialScores]  # per diversity
    sources: dict[float, Counter[str]]  # where the API's answers came from, per diversity
    seconds: float = 0.0
    achieved_rate: float | None = None
    freshness_s: list[float] = field(default_factory=list)


class _Watermark:
    """What the worker has applied to each user, read from the users' own offset records."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def applied(self, pending: Iterable[_Sent]) -> set[_Sent]:
        """The events of `pending` now applied to their users, in one pipeline."""
        pending = list(pending)
        users = sorted({sent.user for sent in pending})
        states = await load_states(self.redis, [keys.user_state(user) for user in users])
        recorded = {
            u: state.offsets if state else {} for u, state in zip(users, states, strict=True)
        }
        return {s for s in pending if recorded[s.user].get(s.slot, -1) >= s.offset}

    async def wait_for(self, sent: _Sent, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.applied([sent]):
                return
            await asyncio.sleep(POLL_S)
        raise ReplayError(
            f"the worker did not apply {sent.slot}@{sent.offset} to user {sent.user} within "
            f"{timeout_s:.0f} s; see its log"
        )


@dataclass(frozen=True)
class _Sent:
    """One published event: its user and its offset record (`core.keys.offset_slot`)."""

    user: str
    slot: str
    offset: int

    @classmethod
    def of(cls, user: str, record: Any) -> _Sent:
        return cls(user, keys.offset_slot(record.topic, record.partition), record.offset)


def _exclusion(event: ReplayEvent) -> str:
    """seen(u) as the API's `exclude_ids` value, capped at the API's limit."""
    return ",".join(itertools.islice(event.seen, MAX_EXCLUDED_IDS))


async def _ask(
    client: httpx.AsyncClient, event: ReplayEvent, excluded: str, diversity: float, depth: int
) -> tuple[list[str], str]:
    """The user's ranking from the API, seen(u) left out: item ids and the answer's source."""
    params: dict[str, Any] = {"k": depth, "diversity": diversity}
    if excluded:
        params["exclude_ids"] = excluded
    response = await client.get(f"/recommend/{event.user_id}", params=params)
    if response.status_code != 200:
        raise ReplayError(f"GET /recommend/{event.user_id}: {response.status_code} {response.text}")
    body = response.json()
    # A user with more than MAX_EXCLUDED_IDS seen items: the rest are dropped here.
    ranked = [item["item_id"] for item in body["items"] if item["item_id"] not in event.seen]
    return ranked, str(body["source"])


def _as_kafka_event(event: ReplayEvent) -> tuple[str, bytes, bytes]:
    stream_event = new_event(
        stream_event_type(event.event_type),
        event.user_id,
        event.item_id,
        ts=datetime.fromtimestamp(event.ts, UTC),
    )
    return topic_for(stream_event.event_type), encode_event(stream_event), event_key(stream_event)


async def replay_live(
    split: PrequentialSplit,
    config: LiveConfig,
    api_url: str,
    settings: Settings,
    diversities: Sequence[float],
    depth: int,
    progress: Progress,
    apply_timeout_s: float = 60.0,
) -> LiveOutcome:
    """Replay `split` against a running API (and worker, unless updates are off)."""
    redis = redis_client_for(settings)
    producer: AIOKafkaProducer | None = None
    if config.updates is not None:
        producer = kafka_producer(settings, linger_ms=0)
        await producer.start()
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
            replay = _LiveReplay(
                client, producer, _Watermark(redis), diversities, depth, apply_timeout_s
            )
            if config.rate is None:
                return await replay.synchronous(split, progress)
            return await replay.asynchronous(split, config.rate, progress)
    finally:
        if producer is not None:
            await producer.stop()
        await redis.aclose()


class _LiveReplay:
    def __init__(
        self,
        client: httpx.AsyncClient,
        producer: AIOKafkaProducer | None,
        watermark: _Watermark,
        diversities: Sequence[float],
        depth: int,
        apply_timeout_s: float,
    ) -> None:
        self.client = client
        self.producer = producer
        self.watermark = watermark
        self.depth = depth
        self.apply_timeout_s = apply_timeout_s
        self.outcome = LiveOutcome(
            scores={d: PrequentialScores() for d in diversities},
            sources={d: Counter() for d in diversities},
        )

    async def score(self, event: ReplayEvent, diversities: Sequence[float]) -> None:
        if not event.scored:
            return
        excluded = _exclusion(event)  # once per event, not per diversity asked
        for diversity in diversities:
            ranked, source = await _ask(self.client, event, excluded, diversity, self.depth)
            self.outcome.scores[diversity].add(rank_in_list(ranked, event.item_id), event.warm)
            self.outcome.sources[diversity][source] += 1

    async def publish(self, event: ReplayEvent) -> asyncio.Future[Any]:
        assert self.producer is not None
        topic, value, key = _as_kafka_event(event)
        delivered: asyncio.Future[Any] = await self.producer.send(topic, value, key=key)
        return delivered

    async def publish_and_wait(self, event: ReplayEvent) -> None:
        record = await (await self.publish(event))
        await self.watermark.wait_for(_Sent.of(event.user_id, record), self.apply_timeout_s)

    async def synchronous(self, split: PrequentialSplit, progress: Progress) -> LiveOutcome:
        """Score, publish, wait until applied; every diversity is asked at each event."""
        started = time.perf_counter()
        for n, event in enumerate(replay_events(split)):
            await self.score(event, list(self.outcome.scores))
            if self.producer is not None:
                await self.publish_and_wait(event)
            progress(n + 1)
        self.outcome.seconds = time.perf_counter() - started
        return self.outcome

    async def asynchronous(
        self, split: PrequentialSplit, rate: float, progress: Progress
    ) -> LiveOutcome:
        """Event n's GET starts at n / rate whatever the state of earlier events; it is
        published as soon as its answer is in and event n - 1 is published (Kafka keeps the
        dataset's order), and nobody waits for the worker. Only the first diversity is asked.
        The first event is applied synchronously and not timed: it waits for the worker to
        join its consumer group."""
        events = replay_events(split)
        first = next(events, None)
        if first is None:
            return self.outcome
        headline = list(self.outcome.scores)[:1]
        await self.score(first, headline)
        await self.publish_and_wait(first)
        sent: dict[_Sent, float] = {}
        poller = asyncio.create_task(
            _collect_freshness(self.watermark, sent, self.outcome.freshness_s)
        )
        previous: asyncio.Future[None] | None = None
        in_flight: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        try:
            for n, event in enumerate(events, start=1):
                await _pace(started, n - 1, rate)
                # The generator adds the item to seen(u) when resumed, before this event's
                # GET has run: the task gets seen(u) as it is now.
                event = replace(event, seen=set(event.seen))
                published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(
                    self._score_then_publish(event, headline, previous, published, sent)
                )
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                previous = published
                progress(n + 1)
            await asyncio.gather(*in_flight)
            self.outcome.achieved_rate = max(len(split.replay) - 1, 1) / (
                time.perf_counter() - started
            )
            await _drain(sent, self.apply_timeout_s)
        finally:
            poller.cancel()
            await asyncio.wait({poller})  # before the Redis client it polls with is closed
        self.outcome.seconds = time.perf_counter() - started
        return self.outcome

    async def _score_then_publish(
        self,
        event: ReplayEvent,
        diversities: Sequence[float],
        previous: asyncio.Future[None] | None,
        published: asyncio.Future[None],
        sent: dict[_Sent, float],
    ) -> None:
        try:
            await self.score(event, diversities)
            if previous is not None:
                await previous
            delivered = await self.publish(event)
            at = time.perf_counter()
        except BaseException as exc:
            published.set_exception(exc)
            raise
        published.set_result(None)
        record = await delivered
        sent[_Sent.of(event.user_id, record)] = at


async def _pace(started: float, n: int, rate: float) -> None:
    delay = started + n / rate - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def _collect_freshness(
    watermark: _Watermark, sent: dict[_Sent, float], freshness: list[float]
) -> None:
    """Every 2 ms: events whose users now record their offsets are applied; record how long
    after their publish that happened (to within the polling period)."""
    while True:
        applied = await watermark.applied(list(sent)) if sent else set()
        now = time.perf_counter()
        for event in applied:
            freshness.append(now - sent.pop(event))
        await asyncio.sleep(0.002)


async def _drain(sent: dict[_Sent, float], timeout_s: float) -> None:
    """Wait until the freshness poller has seen every published event applied."""
    deadline = time.monotonic() + timeout_s
    while sent and time.monotonic() < deadline:  # noqa: ASYNC110 - the poller empties `sent`
        await asyncio.sleep(0.01)
    if sent:
        raise ReplayError(f"{len(sent)} events were still not applied after {timeout_s:.0f} s")


async def warm_up(rows: pd.DataFrame, settings: Settings, timeout_s: float = 600.0) -> int:
    """Publish `rows` (a split's fit rows) to Kafka in time order and wait until the worker has
    applied every one of them: the stream as it ran before the model was published (no version
    is active yet, so users get history and items counts, and nobody a vector). The in-process
    twin is `batch.ranking.mirror.StreamMirror.warm_up`. Returns the events applied."""
    ordered = rows.sort_values("ts", kind="stable")
    producer = kafka_producer(settings, linger_ms=5)
    redis = redis_client_for(settings)
    await producer.start()
    try:
        deliveries = []
        columns = ordered[["user_id", "item_id", "ts", "event_type"]].itertuples(index=False)
        for n, (user, item, ts, event_type) in enumerate(columns):
            event = ReplayEvent(
                n, str(user), str(item), int(ts), str(event_type), False, True, set()
            )
            topic, value, key = _as_kafka_event(event)
            deliveries.append((event.user_id, await producer.send(topic, value, key=key)))
        last: dict[str, _Sent] = {}
        for user, delivery in deliveries:
            last[user] = _Sent.of(user, await delivery)
    finally:
        await producer.stop()
    try:
        watermark = _Watermark(redis)
        pending = set(last.values())
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise ReplayError(
                    f"the worker did not apply the warm-up within {timeout_s:.0f} s "
                    f"({len(pending)} users pending); see its log"
                )
            pending -= await watermark.applied(pending)
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    return len(deliveries)
