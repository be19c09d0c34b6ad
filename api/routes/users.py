"""GET /users/{user_id}/profile: what the system knows about a user right now."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import catalog
from api.breaker import Budget
from api.deps import ServicesDep
from api.models import (
    HistoryItem,
    NegativeFeedback,
    UserProfile,
    WindowSummary,
    error_responses,
)
from api.routes.filters import IdPath

router = APIRouter(tags=["users"])


@router.get("/users/{user_id}/profile", responses=error_responses(422, 503))
async def user_profile(
    user_id: IdPath,
    services: ServicesDep,
    history: Annotated[int, Query(ge=0, le=200, description="Recent events to list.")] = 20,
) -> UserProfile:
    """Recent history, window counts, top genres, and whether (and how freshly) the user has a
    vector. Unknown users get an empty profile, not a 404."""
    budget = Budget(services.settings.api_request_budget_ms / 1000)
    backends = services.backends
    context = await backends.redis_guard.call(
        "user_state",
        budget,
        lambda: catalog.user_context(backends.redis, user_id, backends.versions),
    )
    version, state = context.version, context.state
    vector_source: Literal["online", "batch"] | None = None
    if state.vector_is_of(version):
        vector_source = "online"
    elif context.batch_vector is not None:
        vector_source = "batch"
    online = vector_source == "online"
    settings = services.settings
    exclude_ms = int(settings.feedback_exclude_days * 86_400_000)
    tired = state.fatigue.tired(
        time.time(), settings.fatigue_window_s, settings.fatigue_impressions
    )
    return UserProfile(
        user_id=user_id,
        known=state.change is not None,
        events=state.events,
        last_event_ms=state.last_event_ms or None,
        history=[
            HistoryItem(ts_ms=h.ts_ms, event_type=h.event_type, item_id=h.item_id)
            for h in state.history[:history]
        ],
        windows={
            slot: WindowSummary(start=window.start, counts=dict(window.counts))
            for slot, window in state.windows.items()
            if window is not None
        },
        top_genres=dict(sorted(state.genres.items(), key=lambda pair: -pair[1])),
        negative_feedback=[
            NegativeFeedback(
                item_id=entry.item_id,
                event_type=entry.event_type,
                ts_ms=entry.ts_s * 1000,
                excluded_until_ms=entry.ts_s * 1000 + exclude_ms,
            )
            for entry in state.feedback.entries
        ],
        tired_items=len(tired) if settings.fatigue_action != "off" else 0,
        has_vector=vector_source is not None,
        vector_source=vector_source,
        vector_model_version=version if vector_source is not None else None,
        vector_updated_ms=state.updated_ms if online else None,
        vector_age_s=round(time.time() - state.updated_ms / 1000, 3) if online else None,
        model_version=version,
    )
