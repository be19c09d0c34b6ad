"""Apply a batch of valid events to Redis: exactly once in effect, on one Redis or a Cluster.

1. Read, in one pipeline: each of the batch's users' state hash (with the offsets applied to that
   user), the applied offsets of each item shard the batch touches, and the users' batch vectors;
2. count the fresh events in the item shards (trending, windows): one script call per shard,
   checked against the shard's applied offsets;
3. write each user's new state (vector, history, windows, dedup records, applied offsets): one
   script call per user, checked against the user's change counter.

An event is skipped for a user when its offset is at or below the user's applied offset of its
partition (a redelivery after a crash or rebalance) or when its event id was already applied
to the user (a duplicate publish); a shard skips an event at or below its own applied offset.
Every write is recorded with its offsets in the same atomic call, per user and per shard, so a
batch whose writes partly failed (one shard down) is completed by its redelivery and nothing is
counted twice. Shards are written before users: an event a shard has counted stays fresh for
its user until the user's write lands. A call whose check fails (another worker wrote the user
or shard in between) writes nothing, and that user or shard is recomputed from fresh reads.

Each call touches one hash slot (`core.keys`); a pipeline sends them, grouped by node and
concurrently on a Redis Cluster.
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

from core import keys
from core.attribution import Acted, AttributionConfig, Credit, Shown, Touches, attribute
from core.clients import RedisClient
from core.model_version import as_bytes, vector_from_bytes
from core.rules import (
    ENDS_FATIGUE,
    EVENT_WEIGHTS,
    GENRE_HALF_LIFE_S,
    INTEREST_TYPES,
    WINDOW_TRIPLES,
    WINDOWS,
    Transition,
    add_to_windows,
    cosine,
    counts_as_interest,
    decay_affinity,
    ema_steps,
    fold_in_recent,
    normalize,
    transitions,
    trending_increment,
    trending_ttl_s,
    window_start,
)
from core.scripts import ScriptSet
from core.settings import Settings
from core.user_state import LEGACY_FIELDS, FeedbackEntry, HistoryEntry, RecentIds, UserState
from schemas import AnyEvent
from schemas.impressions import ImpressionEvent
from schemas.records import StreamRecord
from streams.model_cache import ActiveModel
from streams.redis_scripts import READ_USERS, WRITE_SHARD, WRITE_USERS, ShardPlan, pack

log = logging.getLogger(__name__)

# Duplicate publishes (producer retries) are caught by event id within this window of a
# user's newest event; redeliveries after a crash are caught by offsets, whatever their age.
RECENT_IDS_LIMIT = 512


# Each window's slots in a user's state: the current window and the one before it.
@dataclass(frozen=True)
class SourcedEvent:
    """A decoded event (or impression) and where it came from."""

    event: StreamRecord
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

    @cached_property
    def interaction(self) -> AnyEvent | None:
        """The event, unless it is an impression (which touches only its user's fatigue)."""
        return None if isinstance(self.event, ImpressionEvent) else self.event

    @cached_property
    def slot(self) -> str:
        """Its partition as offset records name it (`core.keys.offset_slot`)."""
        return keys.offset_slot(self.topic, self.partition)


@dataclass(frozen=True)
class UpdateConfig:
    mode: str
    # Signed: negative feedback steps away from the item (`core.rules.ema_steps`).
    ema_weights: dict[str, float]
    fold_in_history: int
    fold_in_prior: float
    history_length: int
    dedup_window_s: int
    user_ttl_s: int
    trending_half_life_s: float
    item_shards: int = 16
    feedback_keep_s: int = 30 * 86_400
    feedback_max_items: int = 32
    fatigue_window_s: int = 86_400
    fatigue_max_items: int = 40
    transitions_top_n: int = 0
    transition_half_life_s: float = 7 * 86_400
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    experiment_bucket_s: int = 3600
    experiment_ttl_s: int = 90 * 86_400

    @classmethod
    def from_settings(cls, settings: Settings) -> UpdateConfig:
        return cls(
            mode=settings.stream_user_update,
            ema_weights={
                "view": settings.stream_ema_view,
                "click": settings.stream_ema_click,
                "purchase": settings.stream_ema_purchase,
                "dislike": -settings.stream_ema_dislike,
                "hide": -settings.stream_ema_hide,
            },
            fold_in_history=settings.stream_fold_in_history,
            fold_in_prior=settings.stream_fold_in_prior,
            history_length=settings.stream_history_length,
            dedup_window_s=settings.stream_dedup_window_s,
            user_ttl_s=int(settings.stream_user_ttl_days * 86_400),
            trending_half_life_s=settings.stream_trending_half_life_s,
            item_shards=settings.redis_item_shards,
            feedback_keep_s=int(settings.feedback_exclude_days * 86_400),
            feedback_max_items=settings.feedback_max_items,
            fatigue_window_s=settings.fatigue_window_s,
            fatigue_max_items=settings.fatigue_max_items if settings.fatigue_action != "off" else 0,
            transitions_top_n=settings.stream_transitions_top_n,
            transition_half_life_s=settings.stream_transition_half_life_s,
            attribution=AttributionConfig(
                settings.experiment_attribution_window_s, settings.experiment_max_touches
            ),
            experiment_bucket_s=settings.experiment_bucket_s,
            experiment_ttl_s=int(settings.experiment_retention_days * 86_400),
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
    # (experiment, variant, outcome) -> count, as counted in the shards (`core.attribution`).
    credited: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # The cosine of each applied view, click or purchase with the user's vector just before
    # it (`core.rules.ema_steps`): drift monitoring's `event_scores`.
    event_scores: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Move:
    """A transition and the event that made it (whose offset the shard records)."""

    sourced: SourcedEvent
    step: Transition


@dataclass
class _UserWork:
    state: UserState
    batch_vector: np.ndarray | None
    fresh: list[SourcedEvent] = field(default_factory=list)
    # The user's touches after `fresh` (`core.attribution`), computed with the credits; None:
    # attribution had nothing to do for this user.
    touches: Touches | None = None


class BatchApplier:
    def __init__(self, redis: RedisClient, config: UpdateConfig) -> None:
        self.redis = redis
        self.config = config
        self._scripts = ScriptSet(
            redis, {"read": READ_USERS, "write": WRITE_USERS, "shard": WRITE_SHARD}
        )

    async def apply(self, batch: Sequence[SourcedEvent], model: ActiveModel | None) -> BatchOutcome:
        """Apply `batch` exactly once in effect. Redis errors propagate; the batch is then
        redelivered, and what was written before the error is recognised and skipped."""
        by_user: dict[str, list[SourcedEvent]] = defaultdict(list)
        for sourced in batch:
            by_user[sourced.event.user_id].append(sourced)
        by_shard: dict[int, list[SourcedEvent]] = defaultdict(list)
        for sourced in batch:
            if (event := sourced.interaction) is not None:
                by_shard[keys.item_shard(event.item_id, self.config.item_shards)].append(sourced)
            elif _of_experiment(sourced):
                # An experiment's impression is counted in its user's shard of the items' ones.
                shard = keys.item_shard(sourced.event.user_id, self.config.item_shards)
                by_shard[shard].append(sourced)
        outcome = BatchOutcome()
        # Transitions are counted in their source item's shard, which only the users' history
        # names: with the table on, every shard's applied offsets are read with the users.
        shards = range(self.config.item_shards) if self.config.transitions_top_n else by_shard
        work, shard_offsets = await self._read(list(by_user), list(shards), model)
        self._select_fresh(by_user, work, outcome)
        moves = self._transitions(work) if self.config.transitions_top_n else {}
        credits = self._credits(work)
        await self._write_shards(by_shard, moves, credits, work, shard_offsets, outcome)
        pending = {user: item for user, item in work.items() if item.fresh}
        while pending:
            conflicted = await self._write_users(pending, model, by_user, outcome)
            if not conflicted:
                break
            outcome.conflicts += len(conflicted)
            # Another worker wrote these users since they were read: read them again, and only
            # what is still fresh for them is applied.
            reread, _ = await self._read(conflicted, [], model)
            self._select_fresh(by_user, reread, outcome)
            self._credits(reread)  # their touches anew; the shards have counted the credits
            work.update(reread)
            pending = {user: item for user, item in reread.items() if item.fresh}
        now = time.time()
        for item in work.values():
            for sourced in item.fresh:
                outcome.applied[sourced.event.event_type] += 1
                outcome.freshness_s.append(max(0.0, now - sourced.ts_s))
        return outcome

    async def _read(
        self, users: list[str], shards: list[int], model: ActiveModel | None
    ) -> tuple[dict[str, _UserWork], dict[int, dict[str, bytes]]]:
        """In one pipeline: the users' states (one script call per slot group), their batch
        vectors and the item shards' applied offsets."""
        state_keys = [keys.user_state(user) for user in users]
        groups = self._scripts.slot_groups(state_keys)
        calls = [([state_keys[n] for n in group], LEGACY_FIELDS) for group in groups]
        commands: list[tuple[Any, ...]] = [("HGETALL", keys.shard_applied(s)) for s in shards]
        # The users' batch vectors: one HMGET per hash tag (the vectors live in the users' tags).
        by_vector_key: dict[str, list[int]] = {}
        if model is not None:
            for n, user in enumerate(users):
                by_vector_key.setdefault(keys.user_vectors(model.version, user), []).append(n)
        for key, members in by_vector_key.items():
            commands.append(("HMGET", key, *[users[n] for n in members]))
        replies, other = await self._scripts.run_with("read", calls, commands)
        shard_offsets = {s: _decoded(applied) for s, applied in zip(shards, other, strict=False)}
        batch_vectors: list[Any] = [None] * len(users)
        for members, vectors in zip(by_vector_key.values(), other[len(shards) :], strict=True):
            for n, raw_vector in zip(members, vectors, strict=True):
                batch_vectors[n] = raw_vector
        states: list[Any] = [None] * len(users)
        for group, reply in zip(groups, replies, strict=True):
            for n, fields in zip(group, reply, strict=True):
                states[n] = fields
        work: dict[str, _UserWork] = {}
        for n, user in enumerate(users):
            raw_vector = batch_vectors[n]
            work[user] = _UserWork(
                state=UserState.decode(states[n]),
                batch_vector=vector_from_bytes(as_bytes(raw_vector)) if raw_vector else None,
            )
        return work, shard_offsets

    @staticmethod
    def _select_fresh(
        by_user: dict[str, list[SourcedEvent]], work: dict[str, _UserWork], outcome: BatchOutcome
    ) -> None:
        for user, item in work.items():
            known = item.state.recent_ids.prefixes()
            applied = item.state.offsets
            item.fresh = []
            for sourced in by_user[user]:
                event_id = RecentIds.prefix(sourced.event.event_id.bytes)
                if sourced.offset <= applied.get(sourced.slot, -1):
                    outcome.redelivered += 1
                elif event_id in known:
                    outcome.duplicates += 1
                else:
                    known.add(event_id)
                    item.fresh.append(sourced)

    def _transitions(self, work: dict[str, _UserWork]) -> dict[int, list[_Move]]:
        """Each user's steps from item to item in their fresh events (from their newest item
        of interest before them), by the shard of the item they leave."""
        shards = self.config.item_shards
        moves: dict[int, list[_Move]] = defaultdict(list)
        for item in work.values():
            fresh = [s for s in item.fresh if s.interaction is not None]
            if not fresh:
                continue
            steps = [(e.item_id, e.event_type, s.ts_s) for s in fresh if (e := s.interaction)]
            previous = item.state.recent.newest_of(INTEREST_TYPES)
            for step in transitions(previous, steps):
                moves[keys.item_shard(step.source, shards)].append(_Move(fresh[step.index], step))
        return moves

    def _credits(self, work: dict[str, _UserWork]) -> dict[int, list[Credit]]:
        """The experiment arms each fresh event or impression is credited to (by `id` of its
        `SourcedEvent`), for the users shown an experiment's answers."""
        credits: dict[int, list[Credit]] = {}
        for item in work.values():
            if _attributes(item.state, item.fresh):
                ordered = _by_time(item.fresh)
                item.touches, found = attribute(
                    item.state.touches, map(_attributed, ordered), self._window
                )
                for sourced, credited in zip(ordered, found, strict=True):
                    if credited:
                        credits[id(sourced)] = credited
        return credits

    @property
    def _window(self) -> AttributionConfig:
        return self.config.attribution

    async def _write_shards(
        self,
        by_shard: dict[int, list[SourcedEvent]],
        moves: dict[int, list[_Move]],
        credits: dict[int, list[Credit]],
        work: dict[str, _UserWork],
        applied: dict[int, dict[str, bytes]],
        outcome: BatchOutcome,
    ) -> None:
        """Count the batch's fresh events in their item shards, and their transitions in the
        shards of the items left, each shard skipping what it has already counted (`applied`,
        as read with the users); a shard written by someone else meanwhile is read and planned
        again."""
        fresh = {id(s) for item in work.values() for s in item.fresh}
        pending = list(by_shard.keys() | moves.keys())
        while pending:
            tallies: dict[int, Counter[tuple[str, str, str]]] = defaultdict(Counter)
            plans = {
                shard: self._plan_shard(
                    shard,
                    by_shard.get(shard, []),
                    moves.get(shard, []),
                    fresh,
                    applied[shard],
                    credits,
                    tallies[shard],
                )
                for shard in pending
            }
            results = await self._scripts.run(
                "shard", [(plan.keys, [plan.blob()]) for plan in plans.values()]
            )
            pending = [shard for shard, done in zip(plans, results, strict=True) if done != 1]
            for shard, done in zip(plans, results, strict=True):
                if done == 1:
                    outcome.credited.update(tallies[shard])
            if pending:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for shard in pending:
                        pipe.hgetall(keys.shard_applied(shard))
                    replies = await pipe.execute()
                applied = dict(zip(pending, map(_decoded, replies), strict=True))

    def _plan_shard(
        self,
        shard: int,
        events: list[SourcedEvent],
        moves: list[_Move],
        fresh: set[int],
        applied: dict[str, bytes],
        credits: dict[int, list[Credit]],
        tally: Counter[tuple[str, str, str]],
    ) -> ShardPlan:
        config = self.config
        plan = ShardPlan(keys.shard_applied(shard))
        # Keyed by (window, start): the Redis key is formatted once per window, not per event.
        item_windows: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        trending: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        experiments: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        latest: dict[str, int] = {}
        for sourced in events:
            slot = sourced.slot
            latest[slot] = max(latest.get(slot, -1), sourced.offset)
            if id(sourced) not in fresh or sourced.offset <= int(applied.get(slot, b"-1")):
                continue
            for credit in credits.get(id(sourced), ()):
                arm = credit.arm
                bucket = window_start(credit.ts_s, config.experiment_bucket_s)
                experiments[arm.experiment, bucket][f"{arm.variant}:{credit.outcome}"] += 1
                tally[arm.experiment, arm.variant, credit.outcome] += 1
            event = sourced.interaction
            if event is None:
                continue
            for name, length in WINDOWS.items():
                start = window_start(sourced.ts_s, length)
                item_windows[name, start][f"{event.event_type}:{event.item_id}"] += 1
            if not counts_as_interest(event.event_type):
                continue
            weight = EVENT_WEIGHTS[event.event_type]
            epoch, increment = trending_increment(sourced.ts_s, weight, config.trending_half_life_s)
            trending[epoch][event.item_id] += increment
        for (name, start), counts in item_windows.items():
            key = keys.item_window(shard, name, start)
            plan.add("hincrby", key, 2 * WINDOWS[name], list(counts.items()))
        for (experiment, bucket), counts in experiments.items():
            key = keys.experiment_counts(shard, experiment, bucket)
            plan.add("hincrby", key, config.experiment_ttl_s, list(counts.items()))
        ttl = trending_ttl_s(config.trending_half_life_s)
        for epoch, increments in trending.items():
            plan.add("zincrby", keys.trending(shard, epoch), ttl, list(increments.items()))
        self._plan_moves(plan, shard, moves, applied, latest)
        for slot, offset in latest.items():
            if offset > int(applied.get(slot, b"-1")):
                plan.expect(slot, applied.get(slot))
                plan.record(slot, offset)
        return plan

    def _plan_moves(
        self,
        plan: ShardPlan,
        shard: int,
        moves: list[_Move],
        applied: dict[str, bytes],
        latest: dict[str, int],
    ) -> None:
        """The transitions leaving this shard's items, each counted once (as trending is:
        decayed within an epoch, `core.rules.trending_increment`)."""
        if not moves:
            return
        half_life = self.config.transition_half_life_s
        counts: dict[tuple[int, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for move in moves:
            slot = move.sourced.slot
            latest[slot] = max(latest.get(slot, -1), move.sourced.offset)
            if move.sourced.offset <= int(applied.get(slot, b"-1")):
                continue
            step = move.step
            epoch, increment = trending_increment(step.ts_s, step.weight, half_life)
            counts[epoch, step.source][step.target] += increment
        ttl = trending_ttl_s(half_life)
        keep = self.config.transitions_top_n
        for (epoch, source), increments in counts.items():
            key = keys.item_transitions(shard, epoch, source)
            plan.add("ztop", key, ttl, list(increments.items()), keep)

    async def _write_users(
        self,
        pending: dict[str, _UserWork],
        model: ActiveModel | None,
        by_user: dict[str, list[SourcedEvent]],
        outcome: BatchOutcome,
    ) -> list[str]:
        """Write the new state of each user with fresh events; returns those whose change
        counter had moved (nothing written for them)."""
        config = self.config
        now_ms = int(time.time() * 1000)
        scores: dict[str, list[float]] = {}
        vectors = self._new_vectors(pending, model, outcome, scores) if model is not None else {}
        users = list(pending)
        plans: list[list[Any]] = []
        for user in users:
            item = pending[user]
            state = item.state
            if model is not None:
                state.set_vector(vectors[user], model.version)
            self._apply_to_state(state, item.fresh, model, outcome)
            if item.touches is not None:  # computed with the credits the shards counted
                state.touches = item.touches
            offsets = state.offsets
            for sourced in by_user[user]:
                offsets[sourced.slot] = max(offsets.get(sourced.slot, -1), sourced.offset)
            plans.append([state.change_token, state.encode(now_ms)])
        state_keys = [keys.user_state(user) for user in users]
        groups = self._scripts.slot_groups(state_keys)
        calls = [
            ([state_keys[n] for n in group], [config.user_ttl_s, pack([plans[n] for n in group])])
            for group in groups
        ]
        replies = await self._scripts.run("write", calls)
        conflicted = []
        for group, statuses in zip(groups, replies, strict=True):
            for n, status in zip(group, statuses, strict=True):
                if status == 1:  # written: its scores count (a conflicted user's are redone)
                    outcome.event_scores.extend(scores.get(users[n], ()))
                else:
                    conflicted.append(users[n])
        return conflicted

    def _new_vectors(
        self,
        work: dict[str, _UserWork],
        model: ActiveModel,
        outcome: BatchOutcome,
        scores: dict[str, list[float]],
    ) -> dict[str, np.ndarray | None]:
        """The new vector of each user with fresh events; `scores` receives, per user, the
        score of each fresh positive event against the vector the user held before it."""
        users = [user for user, item in work.items() if item.fresh]
        if self.config.mode == "fold-in":
            for user in users:
                scores[user] = self._fold_in_scores(work[user], model)
            return {user: self._fold_in(work[user], model, outcome) for user in users}
        weights = self.config.ema_weights
        starts: list[np.ndarray | None] = []
        steps: list[list[tuple[np.ndarray, float]]] = []
        for user in users:
            item = work[user]
            starts.append(self._ema_start(item, model))
            user_steps = []
            for event in _interactions(item.fresh):
                item_vector = model.vector(event.item_id)
                if item_vector is None:
                    outcome.unknown_items += 1
                else:
                    user_steps.append((item_vector, weights[event.event_type]))
            steps.append(user_steps)
        found: list[list[float]] = [[] for _ in users]
        vectors = ema_steps(starts, steps, found)
        scores.update(zip(users, found, strict=True))
        return dict(zip(users, vectors, strict=True))

    def _fold_in_scores(self, item: _UserWork, model: ActiveModel) -> list[float]:
        """Fold-in solves each batch at once: its events are scored against the vector the
        user held before the batch (none: a new user, or one of another version)."""
        state = item.state
        if not state.vector_is_of(model.version) or state.vector is None:
            return []
        weights = self.config.ema_weights
        vectors = [
            model.vector(event.item_id)
            for event in _interactions(item.fresh)
            if weights[event.event_type] > 0
        ]
        return [cosine(state.vector, v) for v in vectors if v is not None]

    def _ema_start(self, item: _UserWork, model: ActiveModel) -> np.ndarray | None:
        """The vector a user's fresh events move from."""
        state = item.state
        if state.vector_is_of(model.version):
            return state.vector
        # A new model version: restart from its batch vector and re-apply what happened after
        # its training cut-off, so nothing learnt online is lost or counted twice.
        vector = normalize(item.batch_vector) if item.batch_vector is not None else None
        cutoff_ms = model.meta.trained_until * 1000
        weights = self.config.ema_weights
        steps = []
        for entry in reversed(state.history):
            item_vector = model.vector(entry.item_id)
            if entry.ts_ms > cutoff_ms and item_vector is not None:
                steps.append((item_vector, weights[entry.event_type]))
        (vector,) = ema_steps([vector], [steps])
        return vector

    def _fold_in(
        self, item: _UserWork, model: ActiveModel, outcome: BatchOutcome
    ) -> np.ndarray | None:
        fresh = _interactions(item.fresh)
        recent = [(e.item_id, e.event_type) for e in reversed(item.state.history)]
        recent += [(e.item_id, e.event_type) for e in fresh]
        outcome.unknown_items += sum(model.vector(e.item_id) is None for e in fresh)
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

    def _apply_to_state(
        self,
        state: UserState,
        fresh: list[SourcedEvent],
        model: ActiveModel | None,
        outcome: BatchOutcome,
    ) -> None:
        """Windows, genre affinity, counters, history, feedback, fatigue and dedup records of
        `fresh` events and impressions."""
        config = self.config
        windows = state.windows
        shown = [s for s in fresh if s.interaction is None]
        if shown:
            fresh = [s for s in fresh if s.interaction is not None]
        for sourced in fresh:
            event = sourced.event
            assert not isinstance(event, ImpressionEvent)  # narrows for mypy
            ts_s = sourced.ts_s
            for name, previous_name, length in WINDOW_TRIPLES:
                current, previous, counted = add_to_windows(
                    windows.get(name), windows.get(previous_name), ts_s, event.event_type, length
                )
                windows[name], windows[previous_name] = current, previous
                outcome.late_window_events += not counted
            if model is not None and counts_as_interest(event.event_type):
                weight = EVENT_WEIGHTS[event.event_type]
                elapsed = (sourced.ts_ms - state.last_event_ms) / 1000
                state.genres = decay_affinity(state.genres, elapsed, GENRE_HALF_LIFE_S)
                for genre in model.genres(event.item_id):
                    state.genres[genre] = state.genres.get(genre, 0.0) + weight
            state.events += 1
            state.last_event_ms = max(state.last_event_ms, sourced.ts_ms)
        events = _interactions(fresh)  # `fresh` holds no impression any more: one each
        fresh_entries = [
            HistoryEntry(s.ts_ms, e.event_type, e.item_id)
            for s, e in zip(reversed(fresh), reversed(events), strict=True)
        ]
        state.recent = state.recent.push(fresh_entries, config.history_length)
        state.recent_ids = state.recent_ids.push(
            [(s.event.event_id.bytes, s.ts_ms // 1000) for s in reversed([*fresh, *shown])],
            config.dedup_window_s,
            RECENT_IDS_LIMIT,
        )
        negative = [
            FeedbackEntry(e.item_id, int(e.ts.timestamp()), e.event_type)
            for e in reversed(events)
            if not counts_as_interest(e.event_type)
        ]
        state.feedback = state.feedback.push(
            negative, config.feedback_keep_s, config.feedback_max_items
        )
        state.fatigue = state.fatigue.engaged(
            e.item_id for e in events if e.event_type in ENDS_FATIGUE
        )
        for sourced in shown:
            assert isinstance(sourced.event, ImpressionEvent)
            state.fatigue = state.fatigue.shown(
                sourced.event.item_ids,
                int(sourced.ts_s),
                config.fatigue_window_s,
                config.fatigue_max_items,
            )


def _of_experiment(sourced: SourcedEvent) -> bool:
    """Whether this is an impression of an experiment's answer."""
    event = sourced.event
    return isinstance(event, ImpressionEvent) and event.variant is not None


def _attributes(state: UserState, fresh: Sequence[SourcedEvent]) -> bool:
    """Whether attribution has anything to do for this user: touches or waiting clicks to
    match, an experiment's impression, or a click naming its recommendation."""
    return bool(state.touches) or any(
        _of_experiment(s) or getattr(s.event, "recommendation_id", None) is not None for s in fresh
    )


def _by_time(fresh: Sequence[SourcedEvent]) -> list[SourcedEvent]:
    """A user's events and impressions in time order (they come from several topics, so a
    batch may hold a click before the impression it came from)."""
    return sorted(fresh, key=lambda s: s.ts_s)


def _attributed(sourced: SourcedEvent) -> Shown | Acted:
    """An event or impression as attribution reads it."""
    event = sourced.event
    if isinstance(event, ImpressionEvent):
        return Shown(
            event.recommendation_id,
            sourced.ts_s,
            event.experiment,
            event.variant,
            event.item_ids,
        )
    return Acted(
        event.event_type, sourced.ts_s, event.item_id, getattr(event, "recommendation_id", None)
    )


def _interactions(batch: Sequence[SourcedEvent]) -> list[AnyEvent]:
    """The events of `batch` that are not impressions, in order."""
    return [s.interaction for s in batch if s.interaction is not None]


def _decoded(applied: dict[Any, Any]) -> dict[str, bytes]:
    """A shard's applied offsets as HGETALL returns them, by slot name."""
    return {as_bytes(slot).decode(): as_bytes(offset) for slot, offset in applied.items()}
