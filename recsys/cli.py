"""`recsys`: the one command that fronts the whole system."""

from __future__ import annotations

import json
import signal
from typing import Annotated

import typer
from rich.console import Console

from core.settings import Settings
from recsys.commands.archive import app as archive_app
from recsys.commands.bench import app as bench_app
from recsys.commands.data import app as data_app
from recsys.commands.evaluate import evaluate as evaluate_command
from recsys.commands.experiments import app as experiments_app
from recsys.commands.migrate import migrate_state_command
from recsys.commands.models import app as models_app
from recsys.commands.retrain import retrain_command
from recsys.commands.serve import serve_command
from recsys.commands.services import app as services_app
from recsys.commands.train import train_command
from recsys.commands.worker import forget_offsets_command, simulate_command, worker_command
from recsys.replay.cli import replay_command

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
app.add_typer(models_app, name="models")
app.add_typer(archive_app, name="archive")
app.add_typer(experiments_app, name="experiments")
app.command("train")(train_command)
app.command("retrain")(retrain_command)
app.command("evaluate")(evaluate_command)
app.command("worker")(worker_command)
app.command("forget-offsets")(forget_offsets_command)
app.command("migrate-state")(migrate_state_command)
app.command("serve")(serve_command)
app.command("simulate")(simulate_command)
app.command("replay")(replay_command)
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
def up(
    dataset: Annotated[
        str, typer.Option(help="Dataset to train on when no model is published yet.")
    ] = "synthetic",
    model: Annotated[str, typer.Option(help="Model to train: als or two-tower.")] = "als",
    retrain: Annotated[
        bool, typer.Option(help="Train and publish even if a model is active.")
    ] = False,
    host: Annotated[str, typer.Option(help="Address the API binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    worker_web_port: Annotated[
        int, typer.Option(help="Port of the stream worker's /metrics.")
    ] = 6066,
    simulate: Annotated[
        float | None,
        typer.Option(help="Also run the event simulator at this many events per second."),
    ] = None,
    retrain_every: Annotated[
        str | None,
        typer.Option(help="Also run `recsys retrain --every` at this interval (e.g. 1h)."),
    ] = None,
) -> None:
    """Run the whole system locally on embedded defaults; Ctrl-C stops everything it started.

    Starts Kafka and Redis (or reuses running ones), trains and publishes a model if none is
    active, then runs a stream worker, the archiver (`recsys archive run`), the API and, if
    asked, the retraining loop, and prints where to reach them.
    """
    from recsys.up import UpOptions, run_up

    options = UpOptions(
        dataset=dataset,
        model=model,
        retrain=retrain,
        host=host,
        port=port,
        worker_web_port=worker_web_port,
        simulate_rate=simulate,
        retrain_every=retrain_every,
    )
    raise typer.Exit(run_up(Settings(), options))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # As for Ctrl-C: unwind, so that the throwaway services a benchmark or a replay started
    # are stopped by their context managers instead of being left running.
    raise SystemExit(128 + signum)


def main() -> None:
    # Long-running commands with their own handling (serve, worker, up) replace this one.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app()
