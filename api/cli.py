"""`recsys serve`: run the API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from recsys.settings import Settings


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API: /recommend, /items, /users, /events, /health and /metrics; OpenAPI
    docs at /docs. Backends from RECSYS_REDIS_URL, RECSYS_QDRANT_URL (unset: the embedded
    engine) and RECSYS_KAFKA_BOOTSTRAP_SERVERS."""
    settings = Settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        # Our middleware counts and traces requests; uvicorn's per-request log line would
        # cost more than the request itself at the target rates.
        access_log=False,
    )
