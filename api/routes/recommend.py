"""GET /recommend/{user_id}: a personalized list, or the fallback chain's best answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from api import drift
from api.deps import ImpressionsDep, RecommenderDep
from api.models import RecommendationResponse, error_responses
from api.recommender import RecommendQuery
from api.routes.filters import (
    ExcludedGenres,
    ExcludedIds,
    IdPath,
    OnlyGenres,
    split_values,
)
from core.experiments import Experiment

router = APIRouter(tags=["recommendations"])


# The response model documents the body; the route serializes the answer itself. Returned as a
# model, FastAPI would turn it into a dict and validate that again before writing it: the same
# bytes, for more work on the hottest route.
@router.get(
    "/recommend/{user_id}",
    response_model=RecommendationResponse,
    response_model_exclude_none=True,
    responses=error_responses(422),
)
async def recommend(
    user_id: IdPath,
    recommender: RecommenderDep,
    impressions: ImpressionsDep,
    k: Annotated[int, Query(ge=1, le=100, description="How many items.")] = 10,
    diversity: Annotated[
        float,
        Query(ge=0.0, le=1.0, description="MMR lambda: 1.0 is pure relevance, lower is diverse."),
    ] = 0.8,
    genres: OnlyGenres = None,
    exclude_genres: ExcludedGenres = None,
    exclude_ids: ExcludedIds = None,
    explain: Annotated[
        bool, Query(description="Add the user's recent items that led to each item.")
    ] = False,
    variant: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="Serve this arm of the running experiment instead of the user's own "
            "(for checks by hand); 422 if no experiment runs or it has no such arm.",
        ),
    ] = None,
) -> Response:
    """Never a 404 or a 5xx: unknown or cold users, and failing backends, get a fallback list
    whose `source` and `reason` say what happened. Every answer has a `recommendation_id`; a
    sample of answers (`RECSYS_API_IMPRESSIONS_SAMPLE`) is recorded as impressions."""
    query = RecommendQuery(
        user_id=user_id,
        k=k,
        diversity=diversity,
        genres=split_values(genres),
        exclude_genres=split_values(exclude_genres),
        exclude_ids=frozenset(split_values(exclude_ids)),
        explain=explain,
        variant=variant,
    )
    if variant is not None:
        _check_variant(recommender.experiment, variant)
    answer = await recommender.recommend(query)
    impressions.record(query, answer)
    drift.LIVE.observe_answer(answer)
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


def _check_variant(experiment: Experiment | None, variant: str) -> None:
    arms = [arm.name for arm in experiment.arms] if experiment is not None else []
    if variant not in arms:
        reason = (
            f"must be one of {', '.join(arms)}"
            if arms
            else "no experiment runs (RECSYS_EXPERIMENT)"
        )
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "variant"), "msg": reason, "input": variant}]
        )
