"""GET /items/{item_id}/similar: nearest items to one item in the active model's space."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.breaker import Budget
from api.deps import ServicesDep
from api.models import RecommendationItem, SimilarItemsResponse, error_responses
from api.routes.filters import (
    ExcludedGenres,
    ExcludedIds,
    IdPath,
    OnlyGenres,
    split_values,
)
from core.model_version import active_version
from core.vectors import ItemFilter

router = APIRouter(tags=["items"])


@router.get(
    "/items/{item_id}/similar",
    response_model_exclude_none=True,
    responses=error_responses(
        404,
        422,
        503,
        e404="The item is not in the active model.",
        e503="No model is published yet, or a backend is unavailable.",
    ),
)
async def similar_items(
    item_id: IdPath,
    services: ServicesDep,
    k: Annotated[int, Query(ge=1, le=100, description="How many items.")] = 10,
    genres: OnlyGenres = None,
    exclude_genres: ExcludedGenres = None,
    exclude_ids: ExcludedIds = None,
) -> SimilarItemsResponse:
    """Items whose vectors score highest against this item's (503 while a backend is down:
    there is no sensible stand-in for "similar to this one")."""
    budget = Budget(services.settings.api_request_budget_ms / 1000)
    backends = services.backends
    version = await backends.redis_guard.call(
        "active_version", budget, lambda: active_version(backends.redis)
    )
    if version is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model is published yet")
    found = await backends.qdrant_guard.call(
        "get", budget, lambda: backends.index.get(version, [item_id], with_vectors=True)
    )
    if not found or found[0].vector is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"item {item_id!r} is not in the model")
    vector = found[0].vector
    item_filter = ItemFilter(
        genres=split_values(genres),
        exclude_genres=split_values(exclude_genres),
        exclude_item_ids=frozenset({item_id, *split_values(exclude_ids)}),
    )
    hits = await backends.qdrant_guard.call(
        "search", budget, lambda: backends.index.search(version, vector, k, item_filter)
    )
    return SimilarItemsResponse(
        item_id=item_id,
        model_version=version,
        items=[
            RecommendationItem(
                item_id=h.item_id,
                score=h.score,
                title=h.payload.get("title"),
                genres=list(h.payload.get("genres") or ()),
            )
            for h in hits
        ],
    )
