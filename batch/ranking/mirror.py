"""The live ranking stage replayed in process: the stream worker's state and the API's two-stage
answer, event by event, without Kafka, Redis or an index.

`StreamMirror` keeps what the worker keeps for the ranking stage (each user's online vector and
recent history, the decayed trending counts, the item-to-item transition table with its top-N
trim) by the same rules (`core.rules`), and answers as `api.pipeline` does: the candidate
sources of `core.ranking.SOURCES` with their quotas, the filters, the features, the ranker (or
the sources' order), then the fill from trending and popular. It serves two purposes: the
training rows of `recsys train --ranker` (features of every candidate as of an event, labelled
by the event's item), and the in-process configurations of `recsys replay`, which the live
figures must equal.

Time is event time throughout (the API's `RECSYS_API_CLOCK=events`): decayed counts are read at
the epoch of the user's newest event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from batch.evaluation.online_updates import OnlineUpdateParams
from batch.evaluation.prequential import (
    PrequentialScores,
    PrequentialSplit,
    ReplayEvent,
    rank_in_list,
    replay_events,
)
from batch.publish import ModelArtifacts
from core.ranking import (
    GENRE_POPULAR_DEPTH,
    RECENT_WEIGHTS,
    ItemSignals,
    Pool,
    Ranker,
    SourceList,
    ann_list,
    best_first,
    feature_matrix,
    first_seen_array,
    follow,
    gather,
    genre_popular,
    merge_epochs,
    neighbour_pairs,
    popular_by_genre,
    ranked_order,
    recent_items,
    stream_user,
    user_signals,
    with_items,
)
from core.rules import (
    EVENT_WEIGHTS,
    GENRE_HALF_LIFE_S,
    WINDOW_TRIPLES,
    WINDOWS,
    WindowCounts,
    add_to_windows,
    counts_as_interest,
    decay_affinity,
    ema_update,
    normalize,
    transitions,
    trending_epoch,
    trending_increment,
    window_start,
)
from core.settings import Settings
from core.user_state import stored_genres, stored_vector
from schemas.events import EventType, stream_event_type

Counts = dict[str, float]


@dataclass(frozen=True)
class MirrorConfig:
    """The settings of the worker and the API that the ranking stage's answers depend on."""

    quotas: dict[str, int]
    fallback_candidates: int
    history_length: int
    trending_half_life_s: float
    transition_half_life_s: float
    transitions_top_n: int
    ema: OnlineUpdateParams

    @classmethod
    def from_settings(cls, settings: Settings, ema: OnlineUpdateParams) -> MirrorConfig:
        return cls(
            quotas=dict(settings.api_rank_quotas),
            fallback_candidates=settings.api_fallback_candidates,
            history_length=settings.stream_history_length,
            trending_half_life_s=settings.stream_trending_half_life_s,
            transition_half_life_s=settings.stream_transition_half_life_s,
            transitions_top_n=settings.stream_transitions_top_n,
            ema=ema,
        )


@dataclass
class _User:
    vector: np.ndarray | None  # None until the user has one (as the worker's state)
    online: bool = False  # False: still the batch vector as published (the API reads it raw)
    history: list[tuple[str, str, float]] = field(default_factory=list)  # newest first
    windows: dict[str, WindowCounts | None] = field(default_factory=dict)
    genres: dict[str, float] = field(default_factory=dict)  # as stored: see `_add_genres`
    last_event_ms: int = 0


@dataclass(frozen=True)
class Candidates:
    """One request's ranked stage before the ranker: the pool and its features."""

    pool: Pool
    features: np.ndarray
    fill: list[list[tuple[str, float]]]  # trending, then popular: what fills the answer up


class StreamMirror:
    def __init__(self, artifacts: ModelArtifacts, config: MirrorConfig) -> None:
        self.config = config
        self.item_ids = [str(i) for i in artifacts.item_ids]
        self.row_of_item = {item: row for row, item in enumerate(self.item_ids)}
        self.item_vectors = artifacts.item_vectors.astype(np.float32)
        norms = np.linalg.norm(self.item_vectors, axis=1, keepdims=True)
        self.unit_items = self.item_vectors / np.where(norms > 0, norms, 1.0)
        self.popularity = artifacts.popularity.astype(np.float64)
        self.genres = [tuple(p.get("genres") or ()) for p in artifacts.item_payloads]
        self.genres_of = dict(zip(self.item_ids, self.genres, strict=True))
        counted = zip(self.item_ids, self.popularity.tolist(), strict=True)
        self.popular = best_first(
            ((item, count) for item, count in counted if count > 0),
            max(config.fallback_candidates, config.quotas.get("popular", 0)),
        )
        self.neighbours = artifacts.ranking.neighbours if artifacts.ranking else {}
        first_seen = artifacts.ranking.first_seen if artifacts.ranking else {}
        self.first_seen = first_seen_array(self.item_ids, first_seen)
        self.by_genre = popular_by_genre(
            self.genres, self.popularity, self.item_ids, GENRE_POPULAR_DEPTH
        )
        self.batch_rows = {str(u): n for n, u in enumerate(artifacts.user_ids)}
        self.batch_vectors = artifacts.user_vectors
        self.users: dict[str, _User] = {}
        self.trending: dict[int, Counts] = defaultdict(lambda: defaultdict(float))
        self.transitions: dict[tuple[int, str], Counts] = defaultdict(lambda: defaultdict(float))
        self.hour_counts: dict[int, Counts] = defaultdict(lambda: defaultdict(float))

    # --- the worker ------------------------------------------------------------------------

    def _user(self, user_id: str) -> _User:
        user = self.users.get(user_id)
        if user is None:
            row = self.batch_rows.get(user_id)
            vector = None if row is None else self.batch_vectors[row]
            user = self.users[user_id] = _User(vector)
        return user

    def warm_up(self, rows: pd.DataFrame) -> None:
        """The stream as it ran before the model was published: `rows` (a split's fit rows)
        applied in time order while no version is active, so users get their history and items
        their counts, and no user a vector (`recsys replay` publishes them to Kafka first)."""
        ordered = rows.sort_values("ts", kind="stable")
        columns = ordered[["user_id", "item_id", "ts", "event_type"]].itertuples(index=False)
        for user, item, ts, event_type in columns:
            self._count(str(user), str(item), stream_event_type(str(event_type)), float(ts))

    def apply(self, event: ReplayEvent) -> None:
        """What the worker does with one event (`streams.applier`) under the active version."""
        event_type = stream_event_type(event.event_type)
        user = self._user(event.user_id)
        row = self.row_of_item.get(event.item_id)
        if row is not None:
            start = user.vector if user.online or user.vector is None else normalize(user.vector)
            weight = self.config.ema.ema_weights[event_type]
            # Kept as the worker keeps it (float16 in the user's state): the next step starts there.
            user.vector = stored_vector(ema_update(start, self.item_vectors[row], weight))
            user.online = True
        self._add_genres(user, event.item_id, event_type, float(event.ts))
        self._count(event.user_id, event.item_id, event_type, float(event.ts))

    def _add_genres(self, user: _User, item_id: str, event_type: EventType, ts_s: float) -> None:
        """The worker's genre affinity under an active version (`streams.applier`), kept as its
        state stores it after each write: in hundredths, the `MAX_GENRES` strongest."""
        if not counts_as_interest(event_type):
            return
        elapsed = (_ms(ts_s) - user.last_event_ms) / 1000
        genres = decay_affinity(user.genres, elapsed, GENRE_HALF_LIFE_S)
        for genre in self.genres_of.get(item_id, ()):
            genres[genre] = genres.get(genre, 0.0) + EVENT_WEIGHTS[event_type]
        user.genres = stored_genres(genres)

    def _count(self, user_id: str, item_id: str, event_type: EventType, ts_s: float) -> None:
        """The event in trending, the transition table and the user's history."""
        config = self.config
        user = self._user(user_id)
        for name, previous_name, length in WINDOW_TRIPLES:
            user.windows[name], user.windows[previous_name], _ = add_to_windows(
                user.windows.get(name), user.windows.get(previous_name), ts_s, event_type, length
            )
        user.last_event_ms = max(user.last_event_ms, _ms(ts_s))
        if counts_as_interest(event_type):
            epoch, increment = trending_increment(
                ts_s, EVENT_WEIGHTS[event_type], config.trending_half_life_s
            )
            self.trending[epoch][item_id] += increment
            self.hour_counts[window_start(ts_s, WINDOWS["1h"])][item_id] += 1
        if config.transitions_top_n:
            previous = next(
                (item for item, kind, _ in user.history if counts_as_interest(kind)), None
            )
            for step in transitions(previous, [(item_id, event_type, ts_s)]):
                epoch, increment = trending_increment(
                    step.ts_s, step.weight, config.transition_half_life_s
                )
                counts = self.transitions[epoch, step.source]
                counts[step.target] += increment
                keep = config.transitions_top_n
                if len(counts) > 2 * keep:  # the worker's bulk trim ("ztop")
                    self.transitions[epoch, step.source] = defaultdict(
                        float, best_first(counts.items(), keep)
                    )
        user.history.insert(0, (item_id, event_type, ts_s))
        del user.history[config.history_length :]

    # --- the API ---------------------------------------------------------------------------

    def candidates(self, user_id: str, seen: set[str], shown: Sequence[str] = ()) -> Candidates:
        """The pool of sources for `user_id` with `seen` left out, and its features; with
        `shown` (an impression's items), those the pool lacks are added after it
        (`core.ranking.with_items`)."""
        config = self.config
        quotas = config.quotas
        user = self._user(user_id)
        allowed = _Allowed(self.row_of_item, seen)
        recent = recent_items((item, kind) for item, kind, _ in user.history)
        now_s = user.history[0][2] if user.history else None
        lists = []
        if user.vector is not None and quotas.get("ann", 0):
            lists.append(self._ann(user.vector, seen, quotas["ann"]))
        followed = recent[: len(RECENT_WEIGHTS)]
        if recent and quotas.get("neighbours", 0):
            found = [neighbour_pairs(self.neighbours.get(item)) for item in followed]
            lists.append(SourceList.of("neighbours", follow(found, len(self.row_of_item))))
        if recent and now_s is not None and quotas.get("transitions", 0):
            limit = quotas["transitions"]
            epoch = trending_epoch(now_s, config.transition_half_life_s)
            found = [
                merge_epochs(
                    best_first(self.transitions.get((epoch, item), {}).items(), limit),
                    best_first(self.transitions.get((epoch - 1, item), {}).items(), limit),
                    limit,
                )
                for item in followed
            ]
            lists.append(SourceList.of("transitions", follow(found, len(self.row_of_item))))
        trending = self._trending(now_s)
        lists.append(SourceList.of("trending", trending))
        if quotas.get("genre_popular", 0):
            found_genres = genre_popular(user.genres, self.by_genre, quotas["genre_popular"])
            lists.append(SourceList.of("genre_popular", found_genres))
        lists.append(SourceList.of("popular", self.popular))
        pool = gather(lists, quotas, allowed)
        if shown:
            pool = with_items(pool, [item for item in shown if item in self.row_of_item], quotas)
        rows = [self.row_of_item[item] for item in pool.item_ids]
        clock = now_s if now_s is not None else 0.0
        stream = stream_user(
            user.genres, user.windows, [ts for _, _, ts in user.history[:2]], {}, clock
        )
        signals = user_signals(
            user.vector, recent, self.row_of_item, self.unit_items, len(user.history), stream
        )
        items = ItemSignals(
            unit_vectors=self.unit_items[rows],
            popularity=self.popularity[rows],
            genres=[self.genres[r] for r in rows],
            first_seen_s=self.first_seen[rows],
            **self._item_counts(pool.item_ids, now_s),
        )
        features = feature_matrix(pool, items, signals, clock)
        return Candidates(pool, features, [trending, self.popular])

    def _item_counts(self, item_ids: list[str], now_s: float | None) -> dict[str, np.ndarray]:
        """The candidates' stream counts as the API reads them (`api.catalog.item_stream_reads`)."""
        if now_s is None:
            return {"trending": np.zeros(len(item_ids)), "window_1h": np.zeros(len(item_ids))}
        epoch = self.trending.get(trending_epoch(now_s, self.config.trending_half_life_s), {})
        hour = self.hour_counts.get(window_start(now_s, WINDOWS["1h"]), {})
        return {
            "trending": np.array([epoch.get(item, 0.0) for item in item_ids]),
            "window_1h": np.array([hour.get(item, 0.0) for item in item_ids]),
        }

    def answer(self, user_id: str, seen: set[str], k: int, ranker: Ranker | None) -> list[str]:
        """The item ids the API answers with (MMR off): ranked pool, then the fill."""
        found = self.candidates(user_id, seen)
        pool = found.pool
        order = (
            ranked_order(ranker.score(found.features))
            if ranker is not None and len(pool)
            else np.arange(len(pool))
        )
        picked = [pool.item_ids[i] for i in order[:k]]
        taken = set(picked)
        for fill in found.fill:
            for item, _ in fill:
                if len(picked) >= k:
                    return picked
                if item not in taken and item not in seen and item in self.row_of_item:
                    picked.append(item)
                    taken.add(item)
        return picked

    def _ann(self, vector: np.ndarray, seen: set[str], limit: int) -> SourceList:
        scores = self.item_vectors @ vector.astype(np.float32)
        excluded = [self.row_of_item[i] for i in seen if i in self.row_of_item]
        scores[excluded] = -np.inf
        best = np.argsort(-scores, kind="stable")[:limit]
        best = best[np.isfinite(scores[best])]
        return ann_list([self.item_ids[r] for r in best], scores[best].tolist())

    def _trending(self, now_s: float | None) -> list[tuple[str, float]]:
        if now_s is None:  # no event of the user's yet: the wall clock, far past the replay
            return []
        limit = max(self.config.fallback_candidates, self.config.quotas.get("trending", 0))
        epoch = trending_epoch(now_s, self.config.trending_half_life_s)
        return merge_epochs(
            best_first(self.trending.get(epoch, {}).items(), limit),
            best_first(self.trending.get(epoch - 1, {}).items(), limit),
            limit,
        )


def _ms(ts_s: float) -> int:
    """An event's time as the worker keeps it (milliseconds)."""
    return round(ts_s * 1000)


class _Allowed:
    """The items a request may show: known to the model, not seen."""

    def __init__(self, known: dict[str, int], seen: set[str]) -> None:
        self.known, self.seen = known, seen

    def __contains__(self, item: object) -> bool:
        return item in self.known and item not in self.seen


def replay_scores(
    split: PrequentialSplit,
    artifacts: ModelArtifacts,
    config: MirrorConfig,
    ranked: bool,
    depth: int,
    warm: bool = True,
) -> PrequentialScores:
    """P3 in process, as the live replay asks the API (MMR off, `depth` items): the version's
    ranker when `ranked` (and it has one), else the sources' order. With `warm`, the stream ran
    over the fit rows before the model was published (`StreamMirror.warm_up`)."""
    ranking = artifacts.ranking
    ranker = (
        Ranker(ranking.ranker_text, ranking.feature_version)
        if ranked and ranking is not None and ranking.ranker_text is not None
        else None
    )
    mirror = StreamMirror(artifacts, config)
    if warm:
        mirror.warm_up(split.fit.interactions)
    scores = PrequentialScores()
    for event in replay_events(split):
        if event.scored:
            answer = mirror.answer(event.user_id, event.seen, depth, ranker)
            scores.add(rank_in_list(answer, event.item_id), event.warm)
        mirror.apply(event)
    return scores
