"""The FastAPI application: `create_app(settings)`; `recsys serve` runs it with uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from api.backends import BackendUnavailableError
from api.drift import drift_monitoring
from api.openapi import install_openapi
from api.routes import (
    admin,
    console,
    events,
    experiments,
    health,
    items,
    monitoring,
    recommend,
    users,
)
from api.services import VectorIndexFactory, open_services
from api.telemetry import BodyLimitMiddleware, ObservabilityMiddleware, api_tracer
from core.heap import freeze_long_lived, tune_for_long_running_process
from core.settings import Settings
from core.vectors import open_vector_index

DESCRIPTION = """Recommendations (ANN + MMR, with filters, explanations and a fallback chain),
similar items, user profiles and event ingestion. Every answer says where it came from."""


def create_app(
    settings: Settings | None = None,
    *,
    vector_index_factory: VectorIndexFactory = open_vector_index,
) -> FastAPI:
    """Build the app; clients are created by its lifespan (`vector_index_factory` lets tests
    put a failing index in front of the real one)."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level)
    tracer = api_tracer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_services(settings, tracer, vector_index_factory) as services,
            drift_monitoring(services.redis, settings) as app.state.drift,
        ):
            app.state.services = services
            # The document declares the running experiment's arms: built again when it changes.
            app.openapi_schema = None
            services.experiments.on_change = lambda: setattr(app, "openapi_schema", None)
            freeze_long_lived()
            yield

    app = FastAPI(
        title="recsys API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # ObservabilityMiddleware owns request spans and metrics (documented names, route
        # templates as labels). FastAPI's native telemetry, on whenever a tracer provider is
        # installed, would add a second server span per request, in a trace of its own for a
        # request without `traceparent`, plus spans around dependency resolution.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    for module in (
        recommend,
        items,
        users,
        events,
        experiments,
        health,
        monitoring,
        admin,
        console,
    ):
        app.include_router(module.router)
    app.add_exception_handler(BackendUnavailableError, _backend_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    # Ours, not FastAPI's `max_body_size`: that one answers a body declared too large in plain
    # text and a chunked one in JSON, neither saying what the limit is.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    # Added last, so outermost: its span and timing cover the other middleware too.
    app.add_middleware(ObservabilityMiddleware, tracer=tracer)

    def experiment_arms() -> list[str]:
        # Before the lifespan (a document built offline): the configured experiment's arms.
        services = getattr(app.state, "services", None)
        running = services.experiments.current if services else settings.running_experiment
        return [arm.name for arm in running.arms] if running else []

    install_openapi(
        app, api_key_required=settings.api_key is not None, experiment_arms=experiment_arms
    )
    return app


def create_served_app() -> FastAPI:
    """The app as `recsys serve` runs it, in each uvicorn worker process: with the garbage
    collector tuned for a long-running process (see `core.heap`)."""
    tune_for_long_running_process(raise_young_threshold=False)
    return create_app()


async def _backend_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """The same 422 shape as POST /events: each problem names its parameter."""
    assert isinstance(exc, RequestValidationError)
    problems: list[dict[str, Any]] = []
    for error in exc.errors():
        # ("query", "k") -> "k": where the parameter lives is in the OpenAPI document.
        location = [str(part) for part in error["loc"][1:]] or [str(error["loc"][0])]
        reason = error["msg"].removeprefix("Value error, ")  # as the event codec words it
        problems.append({"field": ".".join(location), "reason": reason, "index": None})
    return JSONResponse({"detail": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
