"""`recsys retrain`: parses options and calls `batch.retrain.run` once or in a loop."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from core.settings import Settings

console = Console(stderr=True)  # errors and the loop's lines
output = Console()


def describe(decision: dict[str, Any]) -> str:
    """One line per decision, for the terminal and the loop's log."""
    figures = ", ".join(
        f"{name} NDCG@10 {decision[f'{name}_ndcg']:.4f}"
        for name in ("candidate", "active", "popularity")
        if decision.get(f"{name}_ndcg") is not None
    )
    rows = decision.get("rows", {})
    return (
        f"{decision['decision']}: {decision['reason']}"
        + (f" [{figures}]" if figures else "")
        + (f" candidate {decision['candidate']}" if decision.get("candidate") else "")
        + (f"; {rows.get('train', 0):,} training, {rows.get('held_out', 0):,} held-out events"
           if rows else "")
    )  # fmt: skip


def retrain_command(
    every: Annotated[
        str | None,
        typer.Option(
            help="Run now and then at this interval (15m, 1h, 1d) until stopped (SIGTERM or "
            "Ctrl-C finish the run under way); default: once."
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="Candidate model: als or two-tower.")] = "als",
    params: Annotated[
        str, typer.Option(help="Hyperparameters as JSON (default: the served ones).")
    ] = "{}",
    window_days: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Days of archive to read (default RECSYS_RETRAIN_WINDOW_DAYS)."
        ),
    ] = None,
    keep_versions: Annotated[
        int, typer.Option(min=1, help="Model versions to keep (older ones are removed).")
    ] = 3,
    metrics_port: Annotated[
        int, typer.Option(help="Port of /metrics (Prometheus) with --every; 0: none.")
    ] = 6071,
    metrics_host: Annotated[
        str, typer.Option(help="Address of /metrics; 0.0.0.0 in a container.")
    ] = "127.0.0.1",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Once: also save the decision as JSON here.")
    ] = None,
) -> None:
    """Train a candidate on the event archive and publish it only if it passes the gate.

    The newest events of the window are held out; the candidate (trained on the events before
    them) and the active version are scored on them (NDCG@10, as protocol P1), and the
    candidate is published and activated only if its NDCG@10 is at least the active version's
    minus RECSYS_RETRAIN_GATE_MARGIN. Every decision is recorded: `recsys models decisions`.
    """
    try:
        hyper: dict[str, Any] = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from None
    from batch.datasets.archive import parse_duration
    from batch.retrain.run import RetrainError, RetrainOptions, retrain_once, run_every

    settings = Settings()
    overrides: dict[str, Any] = {"model": model, "params": hyper, "keep_versions": keep_versions}
    if window_days is not None:
        overrides["window_days"] = window_days
    options = RetrainOptions.from_settings(settings, **overrides)
    if every is None:
        try:
            decision = retrain_once(settings, options)
        except RetrainError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        output.print(describe(decision), markup=False, highlight=False)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(decision, indent=2, default=str))
        return
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--every") from None
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        console.print("stopping after the run under way", highlight=False)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print(f"retraining every {every}; metrics on {metrics_host}:{metrics_port}")
    run_every(
        settings,
        options,
        interval,
        stop,
        lambda decision: console.print(describe(decision), markup=False, highlight=False),
    )
