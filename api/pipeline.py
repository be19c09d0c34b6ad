"""The two-stage request path, for a version published with ranking parts (`recsys train
--ranker`): candidates -> filters -> features -> rank -> MMR, each stage timed
(`recsys_api_stage_duration_seconds`) and traced; the fallback chain then fills the answer up
(`api.recommender`).

Candidates come from the sources of `core.ranking.SOURCES`, each up to its quota
(`RECSYS_API_RANK_QUOTAS`): the ANN neighbours of the user's vector (the vector index), the
version's item-item neighbours of the user's newest items (in memory with the item table), the
stream's transition table from the same items, trending and popular (one Redis round trip for
all three), and the version's popular items of the user's strongest genres (in memory). The
features add the candidates' stream counts (a second round trip, once the pool is known) to the
user's state read before. Filters (seen and excluded ids, requested and excluded genres,
negative feedback, items the version does not know) apply before ranking. The learned ranker
scores the pool; with no ranker, a ranker that fails, or too little of the request's budget
left, the pool keeps its source order and the answer's `reason` says why.
`batch.ranking.mirror` replays exactly this in process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.trace import Tracer

from api import drift, metrics
from api.backends import BackendUnavailableError
from api.breaker import Budget
from api.catalog import (
    Candidate,
    ItemStreamReads,
    UserContext,
    item_stream_reads,
    ranking_reads,
)
from api.item_table import ItemTable
from api.mmr import mmr
from api.signal_cache import ItemSignalsCache, TrendingCache
from api.telemetry import child_span
from core.attribution import item_tag
from core.ranking import (
    RECENT_WEIGHTS,
    ItemSignals,
    Pool,
    SourceList,
    UserSignals,
    ann_list,
    feature_matrix,
    follow,
    gather,
    genre_popular,
    neighbour_pairs,
    ranked_order,
    recent_items,
    stream_user,
    user_signals,
)
from core.settings import Settings
from core.user_state import HistoryEntry, UserState
from core.vectors import ItemFilter

# The ranker is skipped (source order kept) when less than this share of the budget is left.
RANKER_BUDGET_SHARE = 0.25


@dataclass
class Staged:
    """What the two-stage path proposes, best first, and what the answer should say of it."""

    candidates: list[Candidate]
    ranked: bool
    reasons: list[str] = field(default_factory=list)
    strongest: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRequest:
    user_id: str
    k: int
    diversity: float
    genres: tuple[str, ...]
    exclude_genres: tuple[str, ...]
    excluded: set[str]
    tired: set[int]  # item tags of feedback fatigue (left out here; the fill may add them)
    explain: bool
    ranker: bool  # the learned ranker on (`RECSYS_API_RANKER`, or an experiment's arm)
    quotas: Mapping[str, int]  # candidates per source (`RECSYS_API_RANK_QUOTAS`, or an arm's)


@contextmanager
def _stage(tracer: Tracer, name: str, **attributes: Any) -> Iterator[None]:
    started = time.perf_counter()
    with child_span(tracer, f"stage.{name}", attributes=attributes):
        yield
    metrics.stage_series(name).observe(time.perf_counter() - started)


class RankingPipeline:
    def __init__(self, settings: Settings, backends: Any, tracer: Tracer) -> None:
        self.settings = settings
        self.backends = backends
        self.tracer = tracer
        self.trending = TrendingCache()
        self.item_signals = ItemSignalsCache()

    def now_s(self, state: UserState, history: Sequence[HistoryEntry] | None = None) -> float:
        """The time decayed counts are read at (`RECSYS_API_CLOCK`); `history` is the state's,
        when the caller has decoded it already."""
        if self.settings.api_clock == "events":
            history = state.history if history is None else history
            if history:
                return history[0].ts_ms / 1000
        return time.time()

    async def run(
        self, request: StageRequest, context: UserContext, table: ItemTable, budget: Budget
    ) -> Staged:
        stage = table.ranking
        assert stage is not None  # the caller checks
        reasons: list[str] = []
        history = context.state.history  # decoded once: the clock and the sources read it
        now_s = self.now_s(context.state, history)
        with _stage(self.tracer, "candidates"):
            lists, user = await self._sources(
                request, context, table, budget, reasons, history, now_s
            )
        with _stage(self.tracer, "filter"):
            allowed = _Allowed(table, request)
            pool = gather(lists, request.quotas, allowed)
        if not len(pool):
            return Staged([], False, [*reasons, "candidates_empty"])
        rows = np.fromiter((table.row_of_item[i] for i in pool.item_ids), np.int64, len(pool))
        with _stage(self.tracer, "features", **{"recsys.rank.candidates": len(pool)}):
            counted = await self._item_signals(pool.item_ids, now_s, budget)
            items = ItemSignals(
                unit_vectors=table.unit_vectors[rows],
                popularity=table.popularity[rows],
                genres=[table.genres[r] for r in rows],
                first_seen_s=table.first_seen_s[rows],
                trending=counted.trending,
                window_1h=counted.window_1h,
            )
            features = feature_matrix(pool, items, user, now_s)
        scores, why_not = self._rank(request.ranker, stage, features, budget)
        if why_not is not None:
            reasons.append(why_not)
        order = ranked_order(scores) if scores is not None else np.arange(len(pool))
        relevance = scores if scores is not None else -np.arange(len(pool), dtype=np.float64)
        if request.diversity < 1.0:
            with _stage(self.tracer, "mmr"):
                top = order[: max(self.settings.api_mmr_candidates, request.k)]
                chosen = mmr(
                    relevance[top].astype(np.float32),
                    table.unit_vectors[rows[top]],
                    request.k,
                    request.diversity,
                )
                order = top[chosen]
        order = order[: request.k]
        drift.LIVE.observe_features(features[order])
        strongest: dict[str, list[tuple[str, float]]] = {}
        if request.explain and scores is not None and stage.ranker is not None:
            for position, found in zip(order, stage.ranker.strongest(features[order]), strict=True):
                strongest[pool.item_ids[position]] = found
        candidates = [
            self._candidate(table, pool, int(rows[i]), int(i), float(relevance[i])) for i in order
        ]
        return Staged(candidates, scores is not None, reasons, strongest)

    async def _item_signals(
        self, item_ids: Sequence[str], now_s: float, budget: Budget
    ) -> ItemStreamReads:
        redis, settings = self.backends.redis, self.settings

        def read(wanted: Sequence[str], at_s: float) -> Awaitable[ItemStreamReads]:
            return self.backends.redis_guard.call(  # type: ignore[no-any-return]
                "item_stream_reads",
                budget,
                lambda: item_stream_reads(redis, wanted, at_s, settings),
            )

        if settings.api_clock == "wall":
            return await self.item_signals.read(item_ids, now_s, read)
        return await read(item_ids, now_s)

    def _rank(
        self, wanted: bool, stage: Any, features: np.ndarray, budget: Budget
    ) -> tuple[np.ndarray | None, str | None]:
        if not wanted:
            return None, "ranker_off"
        ranker = stage.ranker
        if ranker is None:
            return None, stage.problem or "no_ranker"
        total = self.settings.api_request_budget_ms / 1000
        if budget.remaining() < RANKER_BUDGET_SHARE * total:
            return None, "ranker_budget"
        with _stage(self.tracer, "rank", **{"recsys.rank.candidates": len(features)}):
            try:
                scores: np.ndarray = ranker.score(features)
            except Exception:  # a model that cannot score: the source order still answers
                return None, "ranker_error"
        return scores, None

    @staticmethod
    def _candidate(
        table: ItemTable, pool: Pool, row: int, position: int, score: float
    ) -> Candidate:
        return Candidate(
            item_id=table.item_ids[row],
            score=round(score, 6),
            source=pool.first_source[position],
            title=table.titles[row],
            genres=table.genres[row],
            vector=table.unit_vectors[row],
        )

    async def _sources(
        self,
        request: StageRequest,
        context: UserContext,
        table: ItemTable,
        budget: Budget,
        reasons: list[str],
        history: Sequence[HistoryEntry],
        now_s: float,
    ) -> tuple[list[SourceList], UserSignals]:
        settings, quotas = self.settings, request.quotas
        state, version = context.state, table.version
        recent = recent_items((entry.item_id, entry.event_type) for entry in history)
        vector = state.vector if state.vector_is_of(version) else context.batch_vector
        followed = recent[: len(RECENT_WEIGHTS)]
        redis = self.backends.redis
        limit = max(settings.api_fallback_candidates, quotas.get("trending", 0))
        wall = settings.api_clock == "wall"
        cached = self.trending.get(limit, now_s) if wall else None
        # Redis's reads start first (sent before this coroutine goes on, hence the sleep(0)),
        # so that their round trip overlaps the ANN search: the embedded engine searches on
        # this thread, the Qdrant server over its own connection.
        pending = asyncio.create_task(
            self.backends.redis_guard.call(
                "ranking_sources",
                budget,
                lambda: ranking_reads(
                    redis,
                    followed if quotas.get("transitions", 0) else [],
                    quotas.get("transitions", 0),
                    limit,
                    now_s,
                    settings,
                    cached,
                ),
            )
        )
        lists: list[SourceList] = []
        try:
            await asyncio.sleep(0)
            if vector is not None and quotas.get("ann", 0):
                try:
                    lists.append(await self._ann(request, table, vector, quotas["ann"], budget))
                except BackendUnavailableError as exc:
                    reasons.append(exc.reason)
        except BaseException:
            pending.cancel()
            raise
        neighbours = table.ranking.neighbours if table.ranking else {}
        if recent and quotas.get("neighbours", 0):
            found = [neighbour_pairs(neighbours.get(item)) for item in followed]
            lists.append(SourceList.of("neighbours", follow(found, len(table.item_ids))))
        reads = await pending
        if wall and cached is None:
            self.trending.put(limit, now_s, reads.trending)
        if reads.transitions:
            lists.append(
                SourceList.of("transitions", follow(reads.transitions, len(table.item_ids)))
            )
        lists.append(SourceList.of("trending", reads.trending))
        if quotas.get("genre_popular", 0):
            in_genres = genre_popular(state.genres, table.by_genre, quotas["genre_popular"])
            lists.append(SourceList.of("genre_popular", in_genres))
        lists.append(SourceList.of("popular", table.top_popular(limit)))
        window_s = settings.fatigue_window_s
        stream = stream_user(
            state.genres,
            state.windows,
            [entry.ts_ms / 1000 for entry in history[:2]],
            {
                tag: shown
                for tag, (start, shown) in state.fatigue.counts().items()
                if start > now_s - window_s
            },
            now_s,
        )
        user = user_signals(
            vector, recent, table.row_of_item, table.unit_vectors, len(history), stream
        )
        return lists, user

    async def _ann(
        self, request: StageRequest, table: ItemTable, vector: np.ndarray, n: int, budget: Budget
    ) -> SourceList:
        item_filter = ItemFilter(
            genres=request.genres,
            exclude_genres=request.exclude_genres,
            exclude_item_ids=frozenset(request.excluded),
        )
        hits = await self.backends.qdrant_guard.call(
            "search",
            budget,
            lambda: self.backends.index.search_points(table.version, vector, n, item_filter),
        )
        rows, scores = table.hit_rows(hits)
        return ann_list([table.item_ids[r] for r in rows], scores)


class _Allowed:
    """What the request may show: items of the version, not excluded, of the asked genres, not
    tired of (`core.user_state.Fatigue`)."""

    def __init__(self, table: ItemTable, request: StageRequest) -> None:
        self.table, self.request = table, request
        self.genres = set(request.genres)
        self.exclude_genres = set(request.exclude_genres)
        # Most requests filter on nothing but the ids: the genre and fatigue checks are skipped.
        self.only_ids = not (self.genres or self.exclude_genres or request.tired)

    def __contains__(self, item: object) -> bool:
        row = self.table.row_of_item.get(item) if isinstance(item, str) else None
        if row is None or item in self.request.excluded:
            return False
        if self.only_ids:
            return True
        if self.request.tired and item_tag(str(item)) in self.request.tired:
            return False
        genres = self.table.genres[row]
        if self.genres and not self.genres.intersection(genres):
            return False
        return not self.exclude_genres.intersection(genres)
