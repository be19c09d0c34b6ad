"""`recsys replay`: protocol P3 through the live stack, saved as JSON + Markdown + PNG."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.settings import Settings
from recsys.progress import progress_bars

console = Console()
LIVE_CONFIGURATIONS = ("static", "ema", "fold-in", "ema-async", "ranked", "ranker-off")


def replay_command(
    dataset: Annotated[
        str, typer.Option(help="ml-100k, ml-latest-small, ml-1m, or synthetic[:...].")
    ] = "ml-100k",
    data_dir: Annotated[
        Path | None, typer.Option(help="Where datasets live (default: RECSYS_DATA_DIR).")
    ] = None,
    json_path: Annotated[Path, typer.Option("--json", help="Where to save the figures.")] = Path(
        "reports/replay.json"
    ),
    report: Annotated[Path, typer.Option(help="Where to save the Markdown report.")] = Path(
        "reports/replay.md"
    ),
    live: Annotated[
        list[str] | None,
        typer.Option(
            help="Live configurations to run (repeat the option): static, ema, fold-in, "
            "ema-async, ranked (the two-stage answer with a ranker learnt at a cut of the fit "
            "rows), ranker-off (the same in source order). Default: all six."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Replay only the first N events of each run (a smoke run)."),
    ] = None,
    async_rate: Annotated[
        float, typer.Option(min=1, help="Events/s offered in asynchronous mode.")
    ] = 100.0,
) -> None:
    """Replay a dataset's last 10% of events, in time order, through Kafka, the worker, Redis
    and the API (protocol P3), with stream updates off, EMA and ALS fold-in, against online
    popularity baselines; overall and for warm and cold users.

    Starts its own throwaway Kafka and Redis for each configuration (nothing configured is
    touched). ml-100k takes 11 to 15 minutes on 2 cores; --limit makes a quick run.
    """
    from batch.data import DatasetError
    from recsys.bench.common import save_with_plot
    from recsys.replay.live import ReplayError
    from recsys.replay.report import markdown, plot
    from recsys.replay.run import ReplayOptions, run_replay

    unknown = sorted(set(live or ()) - set(LIVE_CONFIGURATIONS))
    if unknown:  # before minutes of training, not after
        raise typer.BadParameter(
            f"unknown configurations {unknown}; choose from {', '.join(LIVE_CONFIGURATIONS)}",
            param_hint="--live",
        )
    options = ReplayOptions(
        dataset=dataset,
        data_dir=data_dir or Settings().data_dir,
        limit=limit,
        async_rate=async_rate,
        live=tuple(live or LIVE_CONFIGURATIONS),
    )
    with progress_bars(console) as bars:

        def start(label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(f"replaying ({label})", total=total)
            return lambda done: bars.update(task, completed=done)

        try:
            result = run_replay(options, start, console.print)
        except (DatasetError, ReplayError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    summary = {
        name: {k: entry[k] for k in ("hr@10", "ndcg@10", "mrr", "scored_events")}
        for name, entry in result["configurations"].items()
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")
