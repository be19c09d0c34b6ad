"""`recsys services ...`: run the local Kafka broker and Redis for development and tests."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from infra.local.process import ServiceError
from infra.local.services import LocalServices

app = typer.Typer(
    help=(
        "Start, stop and inspect the local Kafka broker (KRaft) and Redis that recsys runs "
        "on 127.0.0.1 for development and tests. Ports come from RECSYS_KAFKA_BOOTSTRAP_SERVERS, "
        "RECSYS_KAFKA_CONTROLLER_PORT and RECSYS_REDIS_URL; data lives under RECSYS_STATE_DIR."
    ),
    no_args_is_help=True,
)
console = Console()


@app.command()
def up(
    redis_aof: Annotated[
        bool, typer.Option(help="Run Redis with append-only persistence.")
    ] = False,
    redis_cluster: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Run a Redis Cluster of this many masters instead of one Redis, on consecutive "
            "ports from RECSYS_REDIS_URL's (3 when RECSYS_REDIS_CLUSTER=true and unset).",
        ),
    ] = None,
    redis_replicas: Annotated[
        int, typer.Option(min=0, help="Replicas of each cluster master (with --redis-cluster).")
    ] = 0,
) -> None:
    """Start Kafka and Redis (a no-op for those already running) and wait until both answer.

    With --redis-cluster N, Redis is a real Redis Cluster: N `redis-server --cluster-enabled yes`
    processes joined once with `redis-cli --cluster create` (fewer than 3 masters, which redis-cli
    refuses, are joined by hand and can have no replicas); `down` stops them too.
    """
    if redis_replicas and (redis_cluster or 3) < 3:
        raise typer.BadParameter(
            "replicas need --redis-cluster 3 or more", param_hint="--redis-replicas"
        )
    services = LocalServices.from_settings(
        Settings(),
        redis_appendonly=redis_aof,
        redis_cluster_masters=redis_cluster,
        redis_cluster_replicas=redis_replicas,
    )
    try:
        with console.status("Starting Redis and Kafka (the first run downloads Kafka's jars)…"):
            started = services.up()
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for name, now in started.items():
        console.print(f"{name}: {'started' if now else 'already running'}")
    console.print("\nPoint recsys processes at them with:")
    for key, value in services.exports().items():
        console.print(f"  export {key}={value}")


@app.command()
def down() -> None:
    """Stop the Kafka and Redis processes (cluster nodes included) that `recsys services up`
    started, and nothing else."""
    services = LocalServices.from_settings(Settings())
    for name, stopped in services.down().items():
        console.print(f"{name}: {'stopped' if stopped else 'not running'}")


@app.command()
def status() -> None:
    """Show whether each local service runs, where, and answers (Kafka metadata, Redis PING);
    exits 1 unless both answer where the settings point."""
    services = LocalServices.from_settings(Settings())
    table = Table("service", "address", "pid", "healthy")
    rows = services.status()
    for row in rows:
        table.add_row(row.name, row.address, str(row.pid or "-"), "yes" if row.healthy else "no")
    console.print(table)
    for row in rows:
        if row.elsewhere:
            console.print(
                f"[yellow]warning:[/yellow] {row.name} runs on {row.address}, but the settings "
                f"point at {row.configured}: run `recsys services down`, then `up` again."
            )
    if not all(row.healthy and not row.elsewhere for row in rows):
        raise typer.Exit(1)
