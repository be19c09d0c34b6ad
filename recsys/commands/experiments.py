"""`recsys experiments`: create, list and stop A/B experiments, and report on them."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from core import experiment_store
from core.clients import RedisClient, redis_client_for
from core.experiment_report import SRM_ALERT_P, build_report
from core.experiments import ExperimentError, experiment_from_json
from core.settings import Settings
from recsys.commands.models import run_redis

app = typer.Typer(
    help="A/B experiments: arms of serving parameters with traffic shares, sticky per user. "
    "One runs at a time; the stream credits clicks and purchases to the arm whose answer led "
    "to them, and `report` compares the arms.",
    no_args_is_help=True,
)
console = Console(stderr=True)
output = Console()
T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _with_registry(work: Callable[[RedisClient], Awaitable[T]]) -> T:
    """`work` on a client of the configured Redis; a refusal of the registry is an error
    message and exit code 1, a Redis failure says how to reach it (`run_redis`)."""

    async def run() -> T:
        redis = redis_client_for(Settings())
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return run_redis(run())
    except experiment_store.ExperimentConflictError as exc:
        raise _fail(str(exc)) from None


@app.command("create")
def create_command(
    definition: Annotated[
        str,
        typer.Argument(
            help='The experiment as JSON, or a JSON file\'s path: {"id": "homepage", "arms": '
            '[{"name": "control", "share": 0.5}, {"name": "random", "share": 0.5, "params": '
            '{"random": true}}]}. Arm params: version (a kept model version), ranker '
            "(true/false), sources (candidate quotas, as RECSYS_API_RANK_QUOTAS), diversity "
            "(MMR lambda), holdout (the popular list), random (random items). The first arm "
            "is the control.",
        ),
    ],
) -> None:
    """Register an experiment and start it: every API process serves its arms within
    RECSYS_API_EXPERIMENT_REFRESH_S."""
    text = Path(definition).read_text() if Path(definition).is_file() else definition
    try:
        experiment = experiment_from_json(text)
    except ExperimentError as exc:
        raise _fail(str(exc)) from None

    _with_registry(lambda redis: experiment_store.create(redis, experiment, time.time()))
    arms = ", ".join(f"{arm.name} {arm.share:.0%}" for arm in experiment.arms)
    output.print(f"experiment [bold]{experiment.id}[/bold] is running: {arms}")


@app.command("list")
def list_command() -> None:
    """Every experiment registered, newest first."""

    found = _with_registry(experiment_store.all_registered)
    if not found:
        output.print("no experiment is registered: `recsys experiments create --help`")
        return
    table = Table("id", "state", "created (UTC)", "stopped (UTC)", "arms")
    for r in found:
        table.add_row(
            r.experiment.id,
            "running" if r.running else "stopped",
            _utc(r.created_s),
            _utc(r.stopped_s) if r.stopped_s is not None else "",
            ", ".join(f"{a.name} {a.share:.0%}" for a in r.experiment.arms),
        )
    output.print(table)


@app.command("stop")
def stop_command(
    experiment_id: Annotated[str, typer.Argument(help="The running one's id.")],
) -> None:
    """Stop the running experiment: answers carry no arm any more; its counters stay for its
    report."""

    _with_registry(lambda redis: experiment_store.stop(redis, experiment_id, time.time()))
    output.print(f"experiment [bold]{experiment_id}[/bold] stopped")


@app.command("report")
def report_command(
    experiment_id: Annotated[str, typer.Argument(help="The experiment's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Where to write the plot of CTR over time (default: "
                     "experiment-<id>.png here); --no-plot for none."),
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plot.")] = False,
) -> None:  # fmt: skip
    """Per-arm counts, click-through and conversion with 95% intervals, each arm against the
    control (difference, its interval, two-proportion p-value), the sample-ratio-mismatch
    check, and a plot of the rates over time."""

    async def read(redis: RedisClient) -> dict[str, Any] | None:
        found = await experiment_store.registered(redis, experiment_id)
        if found is None:
            return None
        return build_report(found, await experiment_store.read_counts(redis, experiment_id))

    report = _with_registry(read)
    if report is None:
        raise _fail(f"no experiment {experiment_id!r}: see `recsys experiments list`")
    if not no_plot:
        from recsys.experiment_plot import plot_report

        written = plot_report(report, plot or Path(f"experiment-{experiment_id}.png"))
        console.print(f"plot: {written}")
    if as_json:
        output.print_json(json.dumps(report))
        return
    output.print(report_table(report))
    srm = report["srm_p_value"]
    verdict = (
        "[red]MISMATCH: the split is broken, do not trust the comparison[/red]"
        if report["sample_ratio_mismatch"]
        else f"no mismatch (alert below {SRM_ALERT_P})"
    )
    output.print(f"sample ratio: p = {_number(srm)}: {verdict}")


def report_table(report: dict[str, Any]) -> Table:
    table = Table(
        "arm", "share", "users", "impressions", "clicks", "purchases", "CTR [95%]",
        "vs control", "p", "conversion [95%]",
        title=f"experiment {report['id']} ({'running' if report['running'] else 'stopped'}), "
        f"control {report['control']}",
    )  # fmt: skip
    for arm in report["arms"]:
        counts, ctr, conversion = arm["counts"], arm["rates"]["ctr"], arm["rates"]["conversion"]
        versus = ctr["vs_control"]
        table.add_row(
            arm["name"],
            f"{arm['share']:.0%}",
            f"{counts['users']:,}",
            f"{counts['impressions']:,}",
            f"{counts['clicks']:,}",
            f"{counts['purchases']:,}",
            _rate(ctr),
            "" if versus is None else f"{_signed(versus['difference'])} "
            f"[{_signed(versus['low'])}, {_signed(versus['high'])}]",
            "" if versus is None else _number(versus["p_value"]),
            _rate(conversion),
        )  # fmt: skip
    return table


def _rate(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return "-"
    return f"{rate['value']:.4f} [{rate['low']:.4f}, {rate['high']:.4f}]"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
