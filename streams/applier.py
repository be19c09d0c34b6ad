"""Apply a batch of valid events to Redis: exactly once in effect, in three round trips.

1. WATCH the state keys of the batch's users and the applied-offsets hash;
2. read every user's state, recent event ids (and, for fold-in or a model switch, history)
   in one pipeline;
3. compute the new state in Python and write it all in one MULTI/EXEC, together with the
   dedup records (event ids) and the per-partition applied offsets.

An event is skipped when its offset is at or below its partition's applied offset (a
redelivery after a crash or rebalance) or when its event id was already applied (a duplicate
publish). If another writer touches a watched key in between, EXEC fails and the batch is
recomputed from fresh reads.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from batch.data import EVENT_WEIGHTS
from recsys import keys
from recsys.model_registry import as_bytes, vector_from_bytes
from recsys.settings import Settings
from schemas import AnyEvent
from streams.model_cache import ActiveModel
from streams.update_rules import (
    WINDOWS,
    add_to_windows,
    decay_affinity,
    ema_update,
    fold_in,
    normalize,
    trending_increment,
    window_start,
)
from streams.user_state import HistoryEntry, UserState

log = logging.getLogger(__name__)

RECENT_EVENT_IDS = 64  # per user, for duplicate publishes; redeliveries use offsets instead
GENRE_HALF_LIFE_S = 7 * 86_400


@dataclass(frozen=True)
class SourcedEvent:
    """A decoded event and where it came from."""

    event: AnyEvent
    topic: str
    partition: int
    offset: int

    @property
    def ts_ms(self) -> int:
        return int(self.event.ts.timestamp() * 1000)


@dataclass(frozen=True)
class UpdateConfig:
    mode: str
    ema_weights: dict[str, float]
    fold_in_history: int
    fold_in_prior: float
    history_length: int
    user_ttl_s: int
    trending_half_life_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> UpdateConfig:
        return cls(
            mode=settings.stream_user_update,
            ema_weights={
                "view": settings.stream_ema_view,
                "click": settings.stream_ema_click,
                "purchase": settings.stream_ema_purchase,
            },
            fold_in_history=settings.stream_fold_in_history,
            fold_in_prior=settings.stream_fold_in_prior,
            history_length=settings.stream_history_length,
            user_ttl_s=int(settings.stream_user_ttl_days * 86_400),
            trending_half_life_s=settings.stream_trending_half_life_s,
        )


@dataclass
class BatchOutcome:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    redelivered: int = 0
    late_window_events: int = 0
    unknown_items: int = 0
    conflicts: int = 0
    freshness_s: list[float] = field(default_factory=list)


@dataclass
class _UserWork:
    state: UserState
    known_ids: set[bytes]  # event ids of this batch that Redis says were applied before
    batch_vector: np.ndarray | None
    history: list[HistoryEntry]  # newest first, as stored
    fresh: list[SourcedEvent] = field(default_factory=list)


class BatchApplier:
    def __init__(self, redis: aioredis.Redis, config: UpdateConfig) -> None:
        self.redis = redis
        self.config = config

    async def apply(self, batch: Sequence[SourcedEvent], model: ActiveModel | None) -> BatchOutcome:
        """Apply `batch` atomically; retried on write conflicts. Redis errors propagate."""
        conflicts = 0
        while True:
            try:
                outcome = await self._apply_once(batch, model)
            except WatchError:
                conflicts += 1
                continue
            outcome.conflicts = conflicts
            return outcome

    async def _apply_once(
        self, batch: Sequence[SourcedEvent], model: ActiveModel | None
    ) -> BatchOutcome:
        by_user: dict[str, list[SourcedEvent]] = defaultdict(list)
        for sourced in batch:
            by_user[sourced.event.user_id].append(sourced)
        users = list(by_user)
        watched = [keys.STREAM_APPLIED]
        watched += [keys.user_state(u) for u in users] + [keys.user_event_ids(u) for u in users]
        async with self.redis.pipeline(transaction=True) as tx:
            await tx.watch(*watched)
            applied_offsets, work = await self._read(by_user, model)
            outcome = BatchOutcome()
            self._select_fresh(by_user, work, applied_offsets, outcome)
            await self._read_history_for_rebase(work, model)
            tx.multi()  # type: ignore[no-untyped-call]
            self._write(tx, work, model, outcome)
            self._write_offsets(tx, batch, applied_offsets)
            await tx.execute()
        now = time.time()
        for item in work.values():
            for sourced in item.fresh:
                outcome.applied[sourced.event.event_type] += 1
                outcome.freshness_s.append(max(0.0, now - sourced.event.ts.timestamp()))
        return outcome

    async def _read(
        self, by_user: dict[str, list[SourcedEvent]], model: ActiveModel | None
    ) -> tuple[dict[str, int], dict[str, _UserWork]]:
        users = list(by_user)
        fold_in_mode = self.config.mode == "fold-in"
        async with self.redis.pipeline(transaction=False) as reads:
            reads.hgetall(keys.STREAM_APPLIED)
            for user in users:
                reads.hgetall(keys.user_state(user))
                event_ids: list[Any] = [s.event.event_id.bytes for s in by_user[user]]
                reads.zmscore(keys.user_event_ids(user), event_ids)
                if fold_in_mode:
                    reads.lrange(keys.user_history(user), 0, self.config.fold_in_history - 1)
            if model is not None:
                reads.hmget(keys.user_vectors(model.version), users)
            replies = await reads.execute()
        applied = {as_bytes(k).decode(): int(v) for k, v in replies[0].items()}
        batch_vectors = replies[-1] if model is not None else [None] * len(users)
        per_user = 3 if fold_in_mode else 2
        work: dict[str, _UserWork] = {}
        for n, user in enumerate(users):
            state_raw, seen_scores, *rest = replies[1 + n * per_user : 1 + (n + 1) * per_user]
            batch_raw = batch_vectors[n]
            events = by_user[user]
            work[user] = _UserWork(
                state=UserState.from_hash(state_raw),
                known_ids={
                    s.event.event_id.bytes
                    for s, score in zip(events, seen_scores, strict=True)
                    if score is not None
                },
                batch_vector=vector_from_bytes(as_bytes(batch_raw)) if batch_raw else None,
                history=[HistoryEntry.decode(h) for h in rest[0]] if rest else [],
            )
        return applied, work

    @staticmethod
    def _select_fresh(
        by_user: dict[str, list[SourcedEvent]],
        work: dict[str, _UserWork],
        applied_offsets: dict[str, int],
        outcome: BatchOutcome,
    ) -> None:
        for user, item in work.items():
            kept: list[SourcedEvent] = []
            seen_in_batch: set[bytes] = set()
            for sourced in by_user[user]:
                if sourced.offset <= applied_offsets.get(
                    f"{sourced.topic}:{sourced.partition}", -1
                ):
                    outcome.redelivered += 1
                elif (event_id := sourced.event.event_id.bytes) in item.known_ids | seen_in_batch:
                    outcome.duplicates += 1
                else:
                    seen_in_batch.add(event_id)
                    kept.append(sourced)
            item.fresh = kept

    async def _read_history_for_rebase(
        self, work: dict[str, _UserWork], model: ActiveModel | None
    ) -> None:
        """Users whose vector belongs to an older model version are rebuilt from their history."""
        if model is None or self.config.mode == "fold-in":
            return
        stale = [
            u
            for u, w in work.items()
            if w.fresh and w.state.model_version not in (None, model.version)
        ]
        if not stale:
            return
        async with self.redis.pipeline(transaction=False) as reads:
            for user in stale:
                reads.lrange(keys.user_history(user), 0, self.config.history_length - 1)
            replies = await reads.execute()
        for user, raw in zip(stale, replies, strict=True):
            work[user].history = [HistoryEntry.decode(h) for h in raw]

    def _new_vector(
        self, item: _UserWork, model: ActiveModel, outcome: BatchOutcome
    ) -> np.ndarray | None:
        state = item.state
        if self.config.mode == "fold-in":
            return self._fold_in(item, model, outcome)
        vector = state.vector
        if state.model_version != model.version:
            # A new model version: restart from its batch vector and re-apply what happened
            # after its training cut-off, so nothing learnt online is lost or counted twice.
            vector = normalize(item.batch_vector) if item.batch_vector is not None else None
            cutoff_ms = model.meta.trained_until * 1000
            for entry in reversed(item.history):
                item_vector = model.vector(entry.item_id)
                if entry.ts_ms > cutoff_ms and item_vector is not None:
                    vector = ema_update(
                        vector, item_vector, self.config.ema_weights[entry.event_type]
                    )
        for sourced in item.fresh:
            item_vector = model.vector(sourced.event.item_id)
            if item_vector is None:
                outcome.unknown_items += 1
                continue
            vector = ema_update(
                vector, item_vector, self.config.ema_weights[sourced.event.event_type]
            )
        return vector

    def _fold_in(
        self, item: _UserWork, model: ActiveModel, outcome: BatchOutcome
    ) -> np.ndarray | None:
        recent = [(e.item_id, e.event_type) for e in reversed(item.history)]
        recent += [(s.event.item_id, s.event.event_type) for s in item.fresh]
        confidence: dict[int, float] = defaultdict(float)
        for item_id, event_type in recent[-self.config.fold_in_history :]:
            row = model.item_row.get(item_id)
            if row is not None:
                confidence[row] += model.alpha * EVENT_WEIGHTS[event_type]
        outcome.unknown_items += sum(model.vector(s.event.item_id) is None for s in item.fresh)
        if not confidence:
            return item.batch_vector
        rows = np.fromiter(confidence, dtype=np.int64)
        return fold_in(
            model.gram,
            model.item_vectors[rows],
            np.fromiter(confidence.values(), dtype=np.float64),
            model.regularization,
            prior=item.batch_vector,
            prior_weight=self.config.fold_in_prior if item.batch_vector is not None else 0.0,
        )

    def _write(
        self,
        tx: aioredis.client.Pipeline,
        work: dict[str, _UserWork],
        model: ActiveModel | None,
        outcome: BatchOutcome,
    ) -> None:
        config = self.config
        now_ms = int(time.time() * 1000)
        item_windows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        trending: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for user, item in work.items():
            if not item.fresh:
                continue
            state = item.state
            if model is not None:
                state.vector = self._new_vector(item, model, outcome)
                state.model_version = model.version
            for sourced in item.fresh:
                event = sourced.event
                ts_s = event.ts.timestamp()
                for name, length in WINDOWS.items():
                    current, previous, counted = add_to_windows(
                        state.windows.get(name), state.windows.get(f"{name}_prev"), ts_s,
                        event.event_type, length,
                    )  # fmt: skip
                    state.windows[name], state.windows[f"{name}_prev"] = current, previous
                    outcome.late_window_events += not counted
                    key = keys.item_window(name, window_start(ts_s, length))
                    item_windows[key][f"{event.event_type}:{event.item_id}"] += 1
                weight = EVENT_WEIGHTS[event.event_type]
                epoch, increment = trending_increment(ts_s, weight, config.trending_half_life_s)
                trending[epoch][event.item_id] += increment
                if model is not None:
                    elapsed = (sourced.ts_ms - state.last_event_ms) / 1000
                    state.genres = decay_affinity(state.genres, elapsed, GENRE_HALF_LIFE_S)
                    for genre in model.genres(event.item_id):
                        state.genres[genre] = state.genres.get(genre, 0.0) + weight
                state.events += 1
                state.last_event_ms = max(state.last_event_ms, sourced.ts_ms)

            state_key, history_key, ids_key = (
                keys.user_state(user), keys.user_history(user), keys.user_event_ids(user)
            )  # fmt: skip
            tx.hset(state_key, mapping=state.to_hash(now_ms))  # type: ignore[arg-type]
            tx.lpush(
                history_key,
                *[
                    HistoryEntry(s.ts_ms, s.event.event_type, s.event.item_id).encode()
                    for s in item.fresh
                ],
            )
            tx.ltrim(history_key, 0, config.history_length - 1)
            tx.zadd(ids_key, {s.event.event_id.bytes: s.ts_ms for s in item.fresh})
            tx.zremrangebyrank(ids_key, 0, -(RECENT_EVENT_IDS + 1))
            for key in (state_key, history_key, ids_key):
                tx.expire(key, config.user_ttl_s)
        for key, counts in item_windows.items():
            for field_name, count in counts.items():
                tx.hincrby(key, field_name, count)
            length = WINDOWS[key.split(":")[2]]
            tx.expire(key, 2 * length)
        for epoch, increments in trending.items():
            key = keys.trending(epoch)
            for item_id, increment in increments.items():
                tx.zincrby(key, increment, item_id)
            tx.expire(key, int(3 * 16 * config.trending_half_life_s))

    @staticmethod
    def _write_offsets(
        tx: aioredis.client.Pipeline, batch: Sequence[SourcedEvent], applied: dict[str, int]
    ) -> None:
        latest: dict[str, int] = {}
        for sourced in batch:
            slot = f"{sourced.topic}:{sourced.partition}"
            latest[slot] = max(latest.get(slot, -1), sourced.offset)
        changed = {slot: off for slot, off in latest.items() if off > applied.get(slot, -1)}
        if changed:
            tx.hset(keys.STREAM_APPLIED, mapping=changed)  # type: ignore[arg-type]
