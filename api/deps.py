"""Dependencies of the routes, as `Annotated` aliases: `def route(services: ServicesDep)`.

All are `async def`, though none awaits: FastAPI runs plain `def` dependencies in a thread
pool, a hop that would cost more than the work they do.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from api.impressions import ImpressionRecorder
from api.publisher import EventPublisher
from api.recommender import RecommendationService
from api.services import Services
from core.clients import RedisClient


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_recommender(request: Request) -> RecommendationService:
    # From the request, not through ServicesDep: FastAPI resolves each nested dependency in a
    # pass of its own, and this one is on every /recommend.
    return (await get_services(request)).recommender


async def get_impressions(request: Request) -> ImpressionRecorder:
    return (await get_services(request)).impressions


async def get_publisher(services: ServicesDep) -> EventPublisher:
    return services.publisher


async def get_redis(services: ServicesDep) -> RedisClient:
    return services.redis


RecommenderDep = Annotated[RecommendationService, Depends(get_recommender)]
ImpressionsDep = Annotated[ImpressionRecorder, Depends(get_impressions)]
PublisherDep = Annotated[EventPublisher, Depends(get_publisher)]
RedisDep = Annotated[RedisClient, Depends(get_redis)]


# A security scheme, not a plain header parameter: clients generated from the OpenAPI document
# then know it is a credential (`api.openapi` drops it where the server sets no key).
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="The server's RECSYS_API_KEY, on every write.",
    auto_error=False,
)


async def require_api_key(
    services: ServicesDep, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]
) -> None:
    expected = services.settings.api_key
    if expected is None:
        return
    # compare_digest: the time taken does not reveal how much of a guess was right.
    if x_api_key is None or not secrets.compare_digest(
        x_api_key.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong X-API-Key header")


ApiKeyDep = Annotated[None, Depends(require_api_key)]
