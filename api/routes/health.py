"""Liveness, readiness (each backend checked) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from api.deps import ServicesDep
from api.metrics import MULTIPROCESS_ENV
from api.models import HealthStatus
from api.publisher import KafkaUnavailableError
from core.model_version import active_version

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_S = 2.0


@router.get("/health/live")
async def live() -> HealthStatus:
    """The process is up and serving (no backend is touched)."""
    return HealthStatus(status="ok")


@router.get(
    "/health/ready", responses={503: {"model": HealthStatus, "description": "A backend failed."}}
)
async def ready(services: ServicesDep, response: Response) -> HealthStatus:
    """Redis, the vector index and Kafka each answer; 503 names the ones that do not."""
    checks = {"redis": "ok", "qdrant": "ok", "kafka": "ok"}
    version = services.popular.version
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await services.redis.ping()
            version = await active_version(services.redis) or version
    except Exception as exc:  # any failure means "not ready"; the name says which
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            if version is None:
                await services.index.list_versions()
            else:
                await services.index.count(version)
    except Exception as exc:
        checks["qdrant"] = f"error: {type(exc).__name__}"
    try:
        await services.publisher.check()
    except KafkaUnavailableError as exc:
        checks["kafka"] = f"error: {exc}"
    if any(value != "ok" for value in checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthStatus(status="unavailable", checks=checks)
    return HealthStatus(status="ok", checks=checks)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus text exposition: every worker process's metrics summed when the server runs
    several (prometheus_client's multiprocess mode, set up by `recsys serve --workers N`)."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
