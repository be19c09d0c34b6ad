"""Apply a batch of valid events to Redis: exactly once in effect, in two round trips.

1. Read the batch's users' state hashes, their batch vectors and the per-partition applied
   offsets with one script call;
2. compute the new state in Python and write it all with one script call, together with the
   dedup records (recent event ids) and the new applied offsets. The write script first checks
   that nothing it read has changed since (see `streams.redis_scripts`).

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
from functools import cached_property
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from core import keys
from core.model_version import as_bytes, vector_from_bytes
from core.rules import (
    EVENT_WEIGHTS,
    GENRE_HALF_LIFE_S,
    WINDOWS,
    add_to_windows,
    decay_affinity,
    ema_steps,
    ema_update,
    fold_in_recent,
    normalize,
    trending_increment,
    trending_ttl_s,
    window_start,
)
from core.settings import Settings
from core.user_state import STATE_FIELDS, HistoryEntry, RecentIds, UserState, push_history
from schemas import AnyEvent
from streams.model_cache import ActiveModel
from streams.redis_scripts import READ_BATCH, WRITE_BATCH, WritePlan, pack

log = logging.getLogger(__name__)

# Duplicate publishes (producer retries) are caught by event id within this window of a
# user's newest event; redeliveries after a crash are caught by offsets, whatever their age.
RECENT_IDS_LIMIT = 512
# Each window's slots in a user's state: the current window and the one before it.
_WINDOW_SLOTS = [(name, f"{name}_prev", length) for name, length in WINDOWS.items()]


@dataclass(frozen=True)
class SourcedEvent:
    """A decoded event and where it came from."""

    event: AnyEvent
    topic: str
    partition: int
    offset: int

    # Cached: a batch reads each event's time several times, and datetime.timestamp() is slow.
    @cached_property
    def ts_s(self) -> float:
        return self.event.ts.timestamp()

    @cached_property
    def ts_ms(self) -> int:
        return int(self.ts_s * 1000)


@dataclass(frozen=True)
class UpdateConfig:
    mode: str
    ema_weights: dict[str, float]
    fold_in_history: int
    fold_in_prior: float
    history_length: int
    dedup_window_s: int
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
            dedup_window_s=settings.stream_dedup_window_s,
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
    batch_vector: np.ndarray | None
    fresh: list[SourcedEvent] = field(default_factory=list)


class BatchApplier:
    def __init__(self, redis: aioredis.Redis, config: UpdateConfig) -> None:
        self.redis = redis
        self.config = config
        self._read_script = redis.register_script(READ_BATCH)
        self._write_script = redis.register_script(WRITE_BATCH)

    async def apply(self, batch: Sequence[SourcedEvent], model: ActiveModel | None) -> BatchOutcome:
        """Apply `batch` atomically; recomputed on write conflicts. Redis errors propagate."""
        conflicts = 0
        while True:
            by_user: dict[str, list[SourcedEvent]] = defaultdict(list)
            for sourced in batch:
                by_user[sourced.event.user_id].append(sourced)
            applied_offsets, work = await self._read(by_user, model)
            outcome = BatchOutcome(conflicts=conflicts)
            self._select_fresh(by_user, work, applied_offsets, outcome)
            plan = self._plan(work, model, outcome)
            self._plan_offsets(plan, batch, applied_offsets)
            if await self._write_script(args=[plan.blob()]) == 1:
                break
            conflicts += 1
        now = time.time()
        for item in work.values():
            for sourced in item.fresh:
                outcome.applied[sourced.event.event_type] += 1
                outcome.freshness_s.append(max(0.0, now - sourced.ts_s))
        return outcome

    async def _read(
        self, by_user: dict[str, list[SourcedEvent]], model: ActiveModel | None
    ) -> tuple[dict[str, bytes], dict[str, _UserWork]]:
        users = list(by_user)
        request = [
            [keys.user_state(u) for u in users],
            keys.user_vectors(model.version) if model else "",
            users if model else [],
            keys.STREAM_APPLIED,
            STATE_FIELDS,
        ]
        replies = await self._read_script(args=[pack(request)])
        applied = {as_bytes(k).decode(): as_bytes(v) for k, v in _pairs(replies[0])}
        batch_vectors = replies[-1]
        work: dict[str, _UserWork] = {}
        for n, user in enumerate(users):
            raw_vector = batch_vectors[n] if n < len(batch_vectors) else None
            work[user] = _UserWork(
                state=UserState.from_fields(replies[n + 1]),
                batch_vector=vector_from_bytes(as_bytes(raw_vector)) if raw_vector else None,
            )
        return applied, work

    @staticmethod
    def _select_fresh(
        by_user: dict[str, list[SourcedEvent]],
        work: dict[str, _UserWork],
        applied_offsets: dict[str, bytes],
        outcome: BatchOutcome,
    ) -> None:
        for user, item in work.items():
            known = item.state.recent_ids.prefixes()
            for sourced in by_user[user]:
                event_id = RecentIds.prefix(sourced.event.event_id.bytes)
                slot = f"{sourced.topic}:{sourced.partition}"
                if sourced.offset <= int(applied_offsets.get(slot, b"-1")):
                    outcome.redelivered += 1
                elif event_id in known:
                    outcome.duplicates += 1
                else:
                    known.add(event_id)
                    item.fresh.append(sourced)

    def _new_vectors(
        self, work: dict[str, _UserWork], model: ActiveModel, outcome: BatchOutcome
    ) -> dict[str, np.ndarray | None]:
        """The new vector of each user with fresh events."""
        users = [user for user, item in work.items() if item.fresh]
        if self.config.mode == "fold-in":
            return {user: self._fold_in(work[user], model, outcome) for user in users}
        weights = self.config.ema_weights
        starts: list[np.ndarray | None] = []
        steps: list[list[tuple[np.ndarray, float]]] = []
        for user in users:
            item = work[user]
            starts.append(self._ema_start(item, model))
            user_steps = []
            for sourced in item.fresh:
                item_vector = model.vector(sourced.event.item_id)
                if item_vector is None:
                    outcome.unknown_items += 1
                else:
                    user_steps.append((item_vector, weights[sourced.event.event_type]))
            steps.append(user_steps)
        return dict(zip(users, ema_steps(starts, steps), strict=True))

    def _ema_start(self, item: _UserWork, model: ActiveModel) -> np.ndarray | None:
        """The vector a user's fresh events move from."""
        state = item.state
        if state.model_version == model.version:
            return state.vector
        # A new model version: restart from its batch vector and re-apply what happened after
        # its training cut-off, so nothing learnt online is lost or counted twice.
        vector = normalize(item.batch_vector) if item.batch_vector is not None else None
        cutoff_ms = model.meta.trained_until * 1000
        weights = self.config.ema_weights
        for entry in reversed(state.history):
            item_vector = model.vector(entry.item_id)
            if entry.ts_ms > cutoff_ms and item_vector is not None:
                vector = ema_update(vector, item_vector, weights[entry.event_type])
        return vector

    def _fold_in(
        self, item: _UserWork, model: ActiveModel, outcome: BatchOutcome
    ) -> np.ndarray | None:
        recent = [(e.item_id, e.event_type) for e in reversed(item.state.history)]
        recent += [(s.event.item_id, s.event.event_type) for s in item.fresh]
        outcome.unknown_items += sum(model.vector(s.event.item_id) is None for s in item.fresh)
        return fold_in_recent(
            recent[-self.config.fold_in_history :],
            model.item_row,
            model.item_vectors,
            model.gram,
            model.alpha,
            model.regularization,
            prior=item.batch_vector,
            prior_weight=self.config.fold_in_prior,
        )

    def _plan(
        self, work: dict[str, _UserWork], model: ActiveModel | None, outcome: BatchOutcome
    ) -> WritePlan:
        config = self.config
        now_ms = int(time.time() * 1000)
        plan = WritePlan()
        # Keyed by (window, start): the Redis key is formatted once per window, not per event.
        item_windows: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        trending: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        vectors = self._new_vectors(work, model, outcome) if model is not None else {}
        for user, item in work.items():
            if not item.fresh:
                continue
            state = item.state
            if model is not None:
                state.vector = vectors[user]
                state.model_version = model.version
            for sourced in item.fresh:
                event = sourced.event
                ts_s = sourced.ts_s
                windows = state.windows
                for name, previous_name, length in _WINDOW_SLOTS:
                    current, previous, counted = add_to_windows(
                        windows.get(name), windows.get(previous_name), ts_s, event.event_type,
                        length,
                    )  # fmt: skip
                    windows[name], windows[previous_name] = current, previous
                    outcome.late_window_events += not counted
                    start = window_start(ts_s, length)
                    item_windows[name, start][f"{event.event_type}:{event.item_id}"] += 1
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
            fresh_entries = [
                HistoryEntry(s.ts_ms, s.event.event_type, s.event.item_id)
                for s in reversed(item.fresh)
            ]
            state.history_raw = push_history(
                state.history_raw, fresh_entries, config.history_length
            )
            state.recent_ids = state.recent_ids.push(
                [(s.event.event_id.bytes, s.ts_ms // 1000) for s in reversed(item.fresh)],
                config.dedup_window_s,
                RECENT_IDS_LIMIT,
            )
            key = keys.user_state(user)
            plan.expect(key, "c", state.change)
            plan.add("hset", key, config.user_ttl_s, list(state.to_hash(now_ms).items()))
        for (name, start), counts in item_windows.items():
            ttl = 2 * WINDOWS[name]
            plan.add("hincrby", keys.item_window(name, start), ttl, list(counts.items()))
        for epoch, increments in trending.items():
            ttl = trending_ttl_s(config.trending_half_life_s)
            plan.add("zincrby", keys.trending(epoch), ttl, list(increments.items()))
        return plan

    @staticmethod
    def _plan_offsets(
        plan: WritePlan, batch: Sequence[SourcedEvent], applied: dict[str, bytes]
    ) -> None:
        latest: dict[str, int] = {}
        for sourced in batch:
            slot = f"{sourced.topic}:{sourced.partition}"
            latest[slot] = max(latest.get(slot, -1), sourced.offset)
        changed = []
        for slot, offset in latest.items():
            if offset > int(applied.get(slot, b"-1")):
                plan.expect(keys.STREAM_APPLIED, slot, applied.get(slot))
                changed.append((slot, offset))
        plan.add("hset", keys.STREAM_APPLIED, 0, changed)


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    """A script's HGETALL reply is a flat [field, value, field, value, ...] list."""
    return list(zip(flat[::2], flat[1::2], strict=True))
