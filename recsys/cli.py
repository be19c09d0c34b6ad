"""`recsys`: the one command that fronts the whole system."""

from __future__ import annotations

import json
import signal
from typing import Annotated

import typer
from rich.console import Console

from batch.cli import train_command
from batch.datasets.cli import app as data_app
from batch.evaluation.cli import evaluate as evaluate_command
from infra.cli import app as services_app
from infra.local.process import ServiceError
from infra.local.services import LocalServices
from recsys.bench_cli import app as bench_app
from recsys.settings import Settings
from streams.cli import worker_command

app = typer.Typer(
    help=(
        "A streaming-first real-time recommender: Kafka events keep user state fresh in Redis, "
        "Qdrant answers nearest-neighbour queries and a FastAPI service serves recommendations. "
        "Every setting is an environment variable with the RECSYS_ prefix; see `recsys config`."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(services_app, name="services")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("worker")(worker_command)
console = Console()


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a list.")] = False,
) -> None:
    """Print the effective settings (environment + defaults), with secrets masked."""
    shown = Settings().masked()
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    for name, value in shown.items():
        console.print(f"RECSYS_{name.upper()}=[bold]{value}[/bold]")


@app.command()
def up() -> None:
    """Run the system locally on embedded defaults; Ctrl-C stops everything it started.

    Today this starts the local Kafka broker and Redis; training, the stream worker and the
    API join as they land (see the README's roadmap).
    """
    settings = Settings()
    services = LocalServices.from_settings(settings)
    try:
        with console.status("Starting Redis and Kafka (the first run downloads Kafka's jars)…"):
            started = services.up()
    except ServiceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print("[green]Kafka and Redis are up.[/green]")
    for key, value in services.exports().items():
        console.print(f"  export {key}={value}")
    console.print("Press Ctrl-C to stop.")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("Stopping…"):
            if started.get("kafka"):
                services.kafka.stop()
            if started.get("redis"):
                services.redis.stop()
        console.print("Stopped.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    app()
