"""`recsys serve`: run the API with uvicorn."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn

from api.metrics import MULTIPROCESS_ENV
from core.settings import Settings


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API: /recommend, /items, /users, /events, /health and /metrics; OpenAPI
    docs at /docs. Backends from RECSYS_REDIS_URL, RECSYS_QDRANT_URL (unset: the embedded
    engine) and RECSYS_KAFKA_BOOTSTRAP_SERVERS."""
    settings = Settings()
    with _metrics_shared_by(workers):
        uvicorn.run(
            "api.main:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            # Our middleware counts and traces requests; uvicorn's per-request log line would
            # cost more than the request itself at the target rates.
            access_log=False,
        )


@contextlib.contextmanager
def _metrics_shared_by(workers: int) -> Iterator[None]:
    """Several worker processes each count only their own requests, so a scrape answered by
    one of them would show a fraction of the traffic. prometheus_client's multiprocess mode
    has every worker write its metrics to files in one directory, which /metrics sums. The
    directory must start empty: a fresh temporary one, unless the operator set their own
    (then wiping it before start is theirs to do, as prometheus_client documents)."""
    if workers == 1 or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="recsys-metrics-") as directory:
        os.environ[MULTIPROCESS_ENV] = directory  # before the workers start: they inherit it
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_ENV]
