"""`recsys worker`: run one stream worker process (run several to share the partitions)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from recsys.clients import ensure_topics
from recsys.settings import Settings
from recsys.tracing import setup_tracing

console = Console(stderr=True)


def worker_command(
    web_port: Annotated[
        int, typer.Option(help="Port of the worker's HTTP server (/metrics); one per worker.")
    ] = 6066,
    group_id: Annotated[
        str | None,
        typer.Option(
            help="Kafka consumer group: workers with the same id share partitions "
            "(default: RECSYS_STREAM_GROUP_ID)."
        ),
    ] = None,
    session_timeout: Annotated[
        float, typer.Option(help="Kafka session timeout (s): how fast a dead worker is noticed.")
    ] = 10.0,
) -> None:
    """Consume events.view/click/purchase and keep every user's state current in Redis.

    Invalid messages go to events.dlq with the reason; offsets are committed only after an
    event's effect is in Redis, and redelivered or duplicate events are skipped. Metrics at
    http://127.0.0.1:WEB_PORT/metrics. User-vector updates follow RECSYS_STREAM_USER_UPDATE
    (ema or fold-in).
    """
    # Imported here so that `recsys --help` and the other commands start fast.
    from faust import Worker

    from streams.app import WorkerOptions, create_app

    settings = Settings()
    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError) as exc:
        console.print(
            f"[red]error:[/red] Kafka at {settings.kafka_bootstrap_servers} is not reachable "
            f"({exc!r}). Start it with `recsys services up` or set RECSYS_KAFKA_BOOTSTRAP_SERVERS."
        )
        raise typer.Exit(1) from None
    if created:
        console.print(f"created topics: {', '.join(created)}")
    setup_tracing(settings, "recsys-worker")
    options = WorkerOptions(
        group_id=group_id or settings.stream_group_id,
        web_port=web_port,
        session_timeout_s=session_timeout,
    )
    app = create_app(settings, options)

    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
