"""The operator's routes, which the console (`/console`) reads: model versions (and switching
between them, behind the API key, as `recsys models activate|rollback` does), the stream's
status, and one item's detail. Everything else the console shows comes from the public routes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from api import admin_reads
from api.admin_models import ItemDetail, ModelSwitch, ModelVersions, StreamStatus
from api.breaker import Budget
from api.deps import ApiKeyDep, ServicesDep
from api.models import ErrorBody, error_responses
from api.routes.filters import IdPath
from api.services import Services
from core.model_version import (
    NoPreviousVersionError,
    UnknownVersionError,
    active_version,
    rollback,
    switch_to,
)

router = APIRouter(prefix="/admin", tags=["admin"])

VersionPath = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="A kept version id (GET /admin/models lists them).",
    ),
]
_E409: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "No kept version was published before the active one (or none is "
        "active): nothing was switched.",
    }
}


def _budget(services: Services) -> Budget:
    return Budget(services.settings.api_request_budget_ms / 1000)


@router.get("/models", responses=error_responses(503))
async def list_models(services: ServicesDep) -> ModelVersions:
    """The kept versions, newest first, with their training figures and the retraining gate's
    decision about each; and the gate's newest decisions (`recsys models list|show|decisions`)."""
    redis, tracking = services.redis, services.settings.mlflow_tracking_uri
    return await services.backends.redis_guard.call(
        "models",
        _budget(services),
        lambda: admin_reads.model_versions(redis, tracking_uri=tracking),
    )


@router.post(
    "/models/{version}/activate",
    responses=error_responses(
        401, 404, 422, 503, e404="The version is not published or no longer kept."
    ),
)
async def activate_model(
    version: VersionPath, services: ServicesDep, _authorized: ApiKeyDep
) -> ModelSwitch:
    """Make a kept version the active one for the workers and the API at once (`recsys models
    activate`): users' online vectors are rebuilt in its space at their next event."""
    redis = services.redis

    # An unknown version is an answer, not a failure of Redis: it must not reach the guard,
    # which would count it against the breaker and answer 503.
    async def switch() -> tuple[bool, str | None]:
        previous = await active_version(redis)
        try:
            await switch_to(redis, version)
        except UnknownVersionError:
            return False, previous
        return True, previous

    switched, previous = await services.backends.redis_guard.call(
        "activate", _budget(services), switch
    )
    if not switched:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"version {version!r} is not published or no longer kept"
        )
    return ModelSwitch(previous=previous, active=version)


@router.post("/models/rollback", responses={**error_responses(401, 503), **_E409})
async def rollback_model(services: ServicesDep, _authorized: ApiKeyDep) -> ModelSwitch:
    """Switch to the kept version published just before the active one (`recsys models
    rollback`); a second rollback goes one further back."""
    redis = services.redis

    async def switch() -> tuple[str, str] | None:
        try:
            return await rollback(redis)
        except (NoPreviousVersionError, UnknownVersionError):
            return None

    switched = await services.backends.redis_guard.call("rollback", _budget(services), switch)
    if switched is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no kept version was published before the active one"
        )
    current, previous = switched
    return ModelSwitch(previous=current, active=previous)


@router.get("/stream", responses=error_responses(422))
async def stream_status(
    services: ServicesDep,
    dead_letters: Annotated[
        int, Query(ge=1, le=50, description="How many of the newest dead letters to list.")
    ] = 10,
) -> StreamStatus:
    """Event rates by type, freshness (events published and not yet applied, and the oldest
    one's age), the dead-letter topic's count and newest errors, and the archivers' lag. Always
    200: a part that could not be read is null, and `unavailable` says why."""
    settings = services.settings
    redis = services.redis
    guard = services.backends.redis_guard
    shards = settings.redis_item_shards
    unavailable: list[str] = []
    rates = applied = None
    try:
        rates = await guard.call(
            "event_rates", _budget(services),
            lambda: admin_reads.event_rates(redis, shards, time.time()),
        )  # fmt: skip
        applied = await guard.call(
            "applied_offsets", _budget(services),
            lambda: admin_reads.applied_offsets(redis, shards),
        )  # fmt: skip
    except Exception as exc:  # one part missing, not the whole answer
        unavailable.append(f"redis: {exc}")
    freshness = dead = archive = None
    kafka = admin_reads.KafkaReads(settings, max(settings.api_kafka_timeout_ms / 1000, 2.0))
    try:
        freshness, dead, archive = await kafka.read(applied, dead_letters)
    except Exception as exc:
        unavailable.append(f"kafka: {type(exc).__name__}")
    return StreamStatus(
        rates=rates,
        freshness=freshness,
        dead_letters=dead,
        archive=archive,
        unavailable=unavailable,
    )


@router.get("/items/{item_id}", responses=error_responses(422, 503))
async def item_detail(item_id: IdPath, services: ServicesDep) -> ItemDetail:
    """The item's payload in the active version, its trending score and rank, and its event
    counts per window (unknown items get an empty payload, not a 404: events may name items the
    model does not have)."""
    redis = services.redis
    settings = services.settings
    return await services.backends.redis_guard.call(
        "item_detail",
        _budget(services),
        lambda: admin_reads.item_detail(redis, item_id, settings, time.time()),
    )
