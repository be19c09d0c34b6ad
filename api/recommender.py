"""Recommendations: the personalized path (user vector -> filtered ANN -> MMR) and the fallback
chain (its order from `Settings.api_fallback_chain`), filled up to k without duplicates.

The personalized search asks the index for point ids and scores only, and takes vectors,
titles and genres from the version's in-memory item table (`api.item_table`); until that table
is loaded it reads them from the index's payloads, as the answer is the same either way.

Every list says where it came from (`source`) and, when it is not purely personalized, why
(`reason`): e.g. `cold_user`, `qdrant_error`, `redis_timeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
from opentelemetry.trace import Tracer

from api import catalog, metrics
from api.backends import BackendUnavailableError, GuardedBackend
from api.breaker import Budget
from api.catalog import Candidate
from api.experiments import ExperimentWatch
from api.item_table import ItemTable, ItemTables
from api.mmr import mmr, unit_rows
from api.models import (
    Contribution,
    FeatureContribution,
    ItemSource,
    RecommendationItem,
    RecommendationResponse,
    Source,
)
from api.pipeline import RankingPipeline, StageRequest
from api.popular_cache import PopularCache
from api.telemetry import child_span
from core.attribution import item_tag
from core.clients import RedisClient
from core.experiments import Experiment, assign
from core.rules import INTEREST_TYPES
from core.settings import Settings
from core.user_state import UserState
from core.vectors import ItemFilter, VectorIndex

# Explanations compare each recommended item with this many of the user's newest items.
EXPLAIN_RECENT_ITEMS = 10
EXPLAIN_TOP = 3
# What a response shows of a candidate; the rest of the payload is not worth building for 100.
CANDIDATE_FIELDS = ("title", "genres")
# The response's item for the candidate at a position of the searched list.
Describe = Callable[[int], Candidate]


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str
    k: int
    diversity: float
    genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()
    exclude_ids: frozenset[str] = frozenset()
    explain: bool = False
    variant: str | None = None  # an arm of the running experiment, forced (checks by hand)
    # What an experiment's arm changes (`core.experiments.ARM_PARAMS`); None: the settings'.
    version: str | None = None
    ranker: bool | None = None
    quotas: Mapping[str, int] | None = None


class _Fatigue:
    """Feedback fatigue in one request: candidates the user was shown too often without acting
    on them are set aside (`sift`) and come after all others (`demoted`), or never."""

    def __init__(self, settings: Settings, state: UserState, now: float) -> None:
        self.action = settings.fatigue_action
        self.tired = (
            state.fatigue.tired(now, settings.fatigue_window_s, settings.fatigue_impressions)
            if self.action != "off" and state.fatigue.raw
            else set()
        )
        self.demoted: list[Candidate] = []

    def sift(self, found: Sequence[Candidate]) -> Sequence[Candidate]:
        if not self.tired:
            return found
        fresh = []
        for candidate in found:
            if item_tag(candidate.item_id) not in self.tired:
                fresh.append(candidate)
            elif self.action == "demote":
                self.demoted.append(candidate)
        return fresh


class NoCandidatesError(Exception):
    """A source had nothing (more) to give for a reason that is not a backend failure."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Backends:
    redis: RedisClient
    index: VectorIndex
    redis_guard: GuardedBackend
    qdrant_guard: GuardedBackend
    versions: catalog.VersionHint = field(default_factory=catalog.VersionHint)


class RecommendationService:
    """Answers GET /recommend: the fallback chain's sources in order (personalized ANN + MMR,
    trending, popular), filters, explanations. Not to be confused with the offline models'
    interface, `batch.models.base.Recommender`."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        popular: PopularCache,
        tracer: Tracer,
        experiments: ExperimentWatch,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.popular_cache = popular
        self.tracer = tracer
        self.item_tables = ItemTables(backends.redis)
        self.experiments = experiments
        self.pipeline = RankingPipeline(settings, backends, tracer)
        self._random = np.random.default_rng()

    @property
    def experiment(self) -> Experiment | None:
        """The experiment answers run now (`api.experiments`)."""
        return self.experiments.current

    async def recommend(self, query: RecommendQuery) -> RecommendationResponse:
        """The answer, from the arm of the running experiment that serves this user (if one
        runs): its parameters change the query, a holdout arm gets the popular list and a
        random arm random items."""
        experiment = self.experiment
        if experiment is None:
            return await self._answer(query, self.settings.api_fallback_chain)
        arm = (
            experiment.arm(query.variant)
            if query.variant is not None
            else assign(experiment, query.user_id)
        )
        params = arm.params
        query = replace(
            query,
            diversity=params.get("diversity", query.diversity),
            version=params.get("version"),
            ranker=params.get("ranker"),
            quotas=params.get("sources"),
        )
        if params.get("random"):
            answer = await self._random_answer(query)
        else:
            holdout = arm.params.get("holdout", False)
            answer = await self._answer(query, ("popular",) if holdout else None)
        answer.experiment, answer.variant = experiment.id, arm.name
        return answer

    async def _random_answer(self, query: RecommendQuery) -> RecommendationResponse:
        """Items drawn uniformly from the active version's catalog (what the user saw and any
        excluded ids left out, filters applied): the floor an experiment's arms should clear.
        Until the version's item table is in, the usual answer."""
        version = self.popular_cache.version
        table = self.item_tables.get(version) if version is not None else None
        if table is None:
            return await self._answer(query, None)
        budget = Budget(self.settings.api_request_budget_ms / 1000)
        try:
            context = await self.backends.redis_guard.call(
                "user_state",
                budget,
                lambda: catalog.user_context(
                    self.backends.redis, query.user_id, self.backends.versions
                ),
            )
            excluded = set(query.exclude_ids) | context.state.history_item_ids
        except BackendUnavailableError:
            excluded = set(query.exclude_ids)
        picked: list[Candidate] = []
        for row in self._random.permutation(len(table.item_ids)):
            candidate = Candidate(
                item_id=table.item_ids[row],
                score=0.0,
                source="random",
                title=table.titles[row],
                genres=table.genres[row],
            )
            if candidate.item_id in excluded or not catalog.passes(
                candidate, query.genres, query.exclude_genres
            ):
                continue
            picked.append(candidate)
            if len(picked) == query.k:
                break
        return self._response(query, picked, table.version, [], {}, "random")

    async def _answer(
        self, query: RecommendQuery, chain: Sequence[str] | None
    ) -> RecommendationResponse:
        budget = Budget(self.settings.api_request_budget_ms / 1000)
        redis_guard = self.backends.redis_guard
        try:
            context = await redis_guard.call(
                "user_state",
                budget,
                lambda: catalog.user_context(
                    self.backends.redis, query.user_id, self.backends.versions, query.version
                ),
            )
        except BackendUnavailableError as exc:
            return self._from_memory(query, [exc.reason])

        version, state = context.version, context.state
        now = time.time()
        settings = self.settings
        excluded = set(query.exclude_ids) | state.history_item_ids
        if state.feedback.entries:
            excluded |= state.feedback.excluded(now, settings.feedback_exclude_days * 86_400)
        picked: dict[str, Candidate] = {}
        reasons: list[str] = []
        fatigue = _Fatigue(settings, state, now)
        led: Source | None = None
        strongest: dict[str, list[tuple[str, float]]] = {}
        for source in chain or self.settings.api_fallback_chain:
            wanted = query.k - len(picked)
            if wanted <= 0:
                break
            try:
                table = self._ranking_table(source, version)
                if table is not None:
                    staged = await self.pipeline.run(
                        self._stage_request(query, excluded, fatigue), context, table, budget
                    )
                    reasons.extend(staged.reasons)
                    if staged.candidates and not picked:
                        led = "ranked" if staged.ranked else "personalized"
                    strongest = staged.strongest
                    found = staged.candidates
                else:
                    found = await self._source(source, query, context, excluded, budget)
            except NoCandidatesError as exc:
                reasons.append(exc.reason)
                continue
            except BackendUnavailableError as exc:
                reasons.append(exc.reason)
                if exc.backend == redis_guard.name:
                    # Redis is gone mid-request: finish from memory rather than try more reads.
                    spare = self._memory_top(query, excluded | picked.keys(), wanted)
                    self._fill(picked, excluded, fatigue.sift(spare), query.k)
                    break
                continue
            self._fill(picked, excluded, fatigue.sift(found), query.k)
            if len(picked) < query.k:
                reasons.append(f"{source}_short")
        if len(picked) < query.k and fatigue.demoted:
            self._fill(picked, excluded, fatigue.demoted, query.k)

        items = list(picked.values())
        if query.explain and items and version:
            explanations = await self._explain(items, state, version, budget)
        else:
            explanations = {}
        return self._response(query, items, version, reasons, explanations, led, strongest)

    def _ranking_table(self, source: str, version: str | None) -> ItemTable | None:
        """The version's item table when the personalized source is the two-stage path: the
        version has ranking parts and its table is loaded (until then, the one-stage path)."""
        if source != "personalized" or version is None:
            return None
        table = self.item_tables.get(version)
        return table if table is not None and table.ranking is not None else None

    def _stage_request(
        self, query: RecommendQuery, excluded: set[str], fatigue: _Fatigue
    ) -> StageRequest:
        settings = self.settings
        return StageRequest(
            user_id=query.user_id,
            k=query.k,
            diversity=query.diversity,
            genres=query.genres,
            exclude_genres=query.exclude_genres,
            excluded=excluded,
            tired=fatigue.tired,
            explain=query.explain,
            ranker=settings.api_ranker == "on" if query.ranker is None else query.ranker,
            quotas=settings.api_rank_quotas if query.quotas is None else query.quotas,
        )

    async def _source(
        self,
        source: str,
        query: RecommendQuery,
        context: catalog.UserContext,
        excluded: set[str],
        budget: Budget,
    ) -> list[Candidate]:
        version = context.version
        if source == "trending":
            now_s = self.pipeline.now_s(context.state)
            return await self._trending(query, version, excluded, budget, now_s)
        if version is None:
            raise NoCandidatesError("no_active_model")
        if source == "personalized":
            return await self._personalized(query, context, version, excluded, budget)
        return await self._popular(query, version, excluded, budget)

    async def _personalized(
        self,
        query: RecommendQuery,
        context: catalog.UserContext,
        version: str,
        excluded: set[str],
        budget: Budget,
    ) -> list[Candidate]:
        # The online vector only counts if it lives in the active model's space.
        state = context.state
        vector = state.vector if state.vector_is_of(version) else context.batch_vector
        if vector is None:
            raise NoCandidatesError("cold_user")
        item_filter = ItemFilter(
            genres=query.genres,
            exclude_genres=query.exclude_genres,
            exclude_item_ids=frozenset(excluded),
        )
        n_candidates = max(self.settings.api_mmr_candidates, query.k)
        table = self.item_tables.get(version)
        if table is None:
            scores, vectors, describe = await self._candidates_with_payloads(
                version, vector, n_candidates, item_filter, budget
            )
        else:
            scores, vectors, describe = await self._candidates_from_table(
                table, vector, n_candidates, item_filter, budget
            )
        if not scores:
            raise NoCandidatesError("personalized_empty")
        started = time.perf_counter()
        with child_span(
            self.tracer,
            "mmr",
            attributes={"recsys.mmr.candidates": len(scores), "recsys.mmr.k": query.k},
        ):
            order = mmr(np.array(scores, dtype=np.float32), vectors, query.k, query.diversity)
        metrics.MMR_SECONDS.observe(time.perf_counter() - started)
        return [describe(i) for i in order]

    async def _candidates_from_table(
        self,
        table: ItemTable,
        vector: np.ndarray,
        n: int,
        item_filter: ItemFilter,
        budget: Budget,
    ) -> tuple[list[float], np.ndarray, Describe]:
        """Scores (best first), the candidates' unit vectors and a way to describe each: ids and
        scores from the index; vectors, titles and genres from the item table."""
        hits = await self.backends.qdrant_guard.call(
            "search",
            budget,
            lambda: self.backends.index.search_points(table.version, vector, n, item_filter),
        )
        rows, scores = table.hit_rows(hits)

        def describe(i: int) -> Candidate:
            row = rows[i]
            return Candidate(
                item_id=table.item_ids[row],
                score=scores[i],
                source="personalized",
                title=table.titles[row],
                genres=table.genres[row],
                vector=table.unit_vectors[row],
            )

        return scores, table.unit_vectors[rows], describe

    async def _candidates_with_payloads(
        self,
        version: str,
        vector: np.ndarray,
        n: int,
        item_filter: ItemFilter,
        budget: Budget,
    ) -> tuple[list[float], np.ndarray, Describe]:
        """Everything from the index, for as long as the version's item table is not in."""
        hits = await self.backends.qdrant_guard.call(
            "search",
            budget,
            lambda: self.backends.index.search(
                version, vector, n, item_filter, with_vectors=True, payload_fields=CANDIDATE_FIELDS
            ),
        )
        hits = [h for h in hits if h.vector is not None]

        def describe(i: int) -> Candidate:
            hit = hits[i]
            return Candidate.from_payload(
                hit.item_id, hit.score, "personalized", hit.payload, hit.vector
            )

        vectors = [cast(np.ndarray, h.vector) for h in hits]
        unit_vectors = unit_rows(np.stack(vectors)) if vectors else np.empty(0)
        return [h.score for h in hits], unit_vectors, describe

    async def _trending(
        self,
        query: RecommendQuery,
        version: str | None,
        excluded: set[str],
        budget: Budget,
        now_s: float,
    ) -> list[Candidate]:
        redis = self.backends.redis
        ranked = await self.backends.redis_guard.call(
            "trending",
            budget,
            lambda: catalog.trending(
                redis,
                self.settings.stream_trending_half_life_s,
                self.settings.api_fallback_candidates,
                self.settings.redis_item_shards,
                now_s,
            ),
        )
        ranked = [(i, s) for i, s in ranked if i not in excluded]
        if not ranked:
            raise NoCandidatesError("trending_empty")
        return await self._with_payloads("trending", ranked, query, version, budget)

    async def _popular(
        self, query: RecommendQuery, version: str, excluded: set[str], budget: Budget
    ) -> list[Candidate]:
        ranked = await self.backends.redis_guard.call(
            "popular",
            budget,
            lambda: catalog.popular(
                self.backends.redis, version, query.genres, self.settings.api_fallback_candidates
            ),
        )
        ranked = [(i, s) for i, s in ranked if i not in excluded]
        if not ranked:
            raise NoCandidatesError("popular_empty")
        return await self._with_payloads("popular", ranked, query, version, budget)

    async def _with_payloads(
        self,
        source: str,
        ranked: list[tuple[str, float]],
        query: RecommendQuery,
        version: str | None,
        budget: Budget,
    ) -> list[Candidate]:
        found = (
            await self.backends.redis_guard.call(
                "item_payloads",
                budget,
                lambda: catalog.payloads(self.backends.redis, version, [i for i, _ in ranked]),
            )
            if version
            else {}
        )
        candidates = [Candidate.from_payload(i, s, source, found.get(i)) for i, s in ranked]
        return [c for c in candidates if catalog.passes(c, query.genres, query.exclude_genres)]

    def _memory_top(self, query: RecommendQuery, excluded: set[str], k: int) -> list[Candidate]:
        return self.popular_cache.top(k, query.genres, query.exclude_genres, excluded)

    def _from_memory(self, query: RecommendQuery, reasons: list[str]) -> RecommendationResponse:
        items = self._memory_top(query, set(query.exclude_ids), query.k)
        return self._response(query, items, self.popular_cache.version, reasons, {})

    @staticmethod
    def _fill(
        picked: dict[str, Candidate], excluded: set[str], found: Sequence[Candidate], k: int
    ) -> None:
        for candidate in found:
            if len(picked) >= k:
                return
            if candidate.item_id not in picked and candidate.item_id not in excluded:
                picked[candidate.item_id] = candidate

    async def _explain(
        self, items: list[Candidate], state: UserState, version: str, budget: Budget
    ) -> dict[str, list[Contribution]]:
        """For each item, the user's recent items whose vectors are most like its own (those
        they showed interest in: a disliked item is no reason to recommend its likes)."""
        interests = (h.item_id for h in state.history if h.event_type in INTEREST_TYPES)
        recent = list(dict.fromkeys(interests))[:EXPLAIN_RECENT_ITEMS]
        if not recent:
            return {}
        missing = [c.item_id for c in items if c.vector is None]
        try:
            vectors, titles = await self._explain_inputs(version, recent, missing, budget)
        except BackendUnavailableError:
            return {}  # an explanation is a nicety: the list stands without it
        recent = [i for i in recent if i in vectors]
        if not recent:
            return {}
        history = np.stack([vectors[i] for i in recent])
        history = history / np.maximum(np.linalg.norm(history, axis=1, keepdims=True), 1e-12)
        explanations: dict[str, list[Contribution]] = {}
        for item in items:
            vector = item.vector if item.vector is not None else vectors.get(item.item_id)
            if vector is None:
                continue
            similarity = history @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
            explanations[item.item_id] = [
                Contribution(
                    item_id=recent[j],
                    title=titles.get(recent[j]),
                    similarity=round(float(similarity[j]), 4),
                )
                for j in np.argsort(-similarity)[:EXPLAIN_TOP]
            ]
        return explanations

    async def _explain_inputs(
        self, version: str, recent: list[str], missing: list[str], budget: Budget
    ) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
        """Vectors of the recent and the `missing` items, and titles of the recent ones: from
        the version's item table when it is in, else two Redis reads."""
        table = self.item_tables.get(version)
        if table is not None:
            rows = {i: table.row_of_item[i] for i in recent + missing if i in table.row_of_item}
            return (
                {i: table.unit_vectors[row] for i, row in rows.items()},
                {i: table.titles[rows[i]] for i in recent if i in rows},
            )
        redis = self.backends.redis
        vectors = await self.backends.redis_guard.call(
            "explain_vectors",
            budget,
            lambda: catalog.item_vectors(redis, version, recent + missing),
        )
        payloads = await self.backends.redis_guard.call(
            "explain_payloads", budget, lambda: catalog.payloads(redis, version, recent)
        )
        return vectors, {i: p.get("title") for i, p in payloads.items()}

    def _response(
        self,
        query: RecommendQuery,
        items: list[Candidate],
        version: str | None,
        reasons: list[str],
        explanations: dict[str, list[Contribution]],
        led: Source | None = None,
        strongest: dict[str, list[tuple[str, float]]] | None = None,
    ) -> RecommendationResponse:
        source = led or cast(Source, items[0].source if items else "popular")
        strongest = strongest or {}
        metrics.recommendation_series(source).inc()
        for reason in reasons:
            metrics.fallback_series(reason).inc()
        return RecommendationResponse(
            user_id=query.user_id,
            items=[
                RecommendationItem(
                    item_id=c.item_id,
                    score=c.score,
                    title=c.title,
                    genres=list(c.genres),
                    source=cast(ItemSource, c.source),
                    explanation=explanations.get(c.item_id) if query.explain else None,
                    features=(
                        [FeatureContribution(feature=f, contribution=v) for f, v in found]
                        if query.explain and (found := strongest.get(c.item_id)) is not None
                        else None
                    ),
                )
                for c in items
            ],
            source=source,
            model_version=version,
            reason="; ".join(reasons) or None,
        )
