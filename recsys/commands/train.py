"""`recsys train`: parses options, shows progress and calls `batch.train.train_and_publish`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from core.settings import Settings
from recsys.progress import stage_bars, train_stage_labels

if TYPE_CHECKING:
    from batch.datasets.archive import ArchiveWindow

console = Console()


class Source(StrEnum):
    DATASET = "dataset"
    ARCHIVE = "archive"


SINCE_HELP = (
    "With --source archive: the window's start, as a duration back from now (30d, 12h) or an "
    "ISO date or date-time (UTC); default: the whole archive."
)
UNTIL_HELP = "With --source archive: the window's end (exclusive), as --since; default: now."
# The options `recsys train` and `recsys evaluate` share to read the event archive.
SourceOption = Annotated[
    Source,
    typer.Option(help="dataset: --dataset; archive: the events archived by `recsys archive run`."),
]
SinceOption = Annotated[str | None, typer.Option(help=SINCE_HELP)]
UntilOption = Annotated[str | None, typer.Option(help=UNTIL_HELP)]


def archive_window(source: Source, since: str | None, until: str | None) -> ArchiveWindow | None:
    """The archive window the options name, or None for --source dataset."""
    from batch.datasets.archive import ArchiveWindow

    if source is not Source.ARCHIVE:
        if since or until:
            raise typer.BadParameter("--since and --until need --source archive")
        return None
    try:
        return ArchiveWindow.parse(since, until)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since/--until") from None


def train_command(
    dataset: Annotated[
        str,
        typer.Option(
            help="ml-100k, ml-1m, ml-latest-small, synthetic[:users=..,items=..,events=..,seed=..]"
            ", or a CSV/Parquet interactions file."
        ),
    ] = "synthetic",
    model: Annotated[str, typer.Option(help="Model to serve: als or two-tower.")] = "als",
    data_dir: Annotated[
        Path | None, typer.Option(help="Where datasets live (default: RECSYS_DATA_DIR).")
    ] = None,
    params: Annotated[
        str, typer.Option(help="Hyperparameters as JSON, e.g. '{\"factors\": 64}'.")
    ] = "{}",
    keep_versions: Annotated[
        int, typer.Option(min=1, help="Model versions to keep (older ones are removed).")
    ] = 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also save the timings as JSON here.")
    ] = None,
    skip_malformed: Annotated[
        bool,
        typer.Option(
            "--skip-malformed", help="Skip and count malformed rows instead of stopping at one."
        ),
    ] = False,
    source: SourceOption = Source.DATASET,
    since: SinceOption = None,
    until: UntilOption = None,
    ranker: Annotated[
        bool,
        typer.Option(
            "--ranker",
            help="Also learn the ranking stage (LightGBM LambdaRank over the candidate sources "
            "and the stream's features, trained at a cut of the same rows) and publish it with "
            "the version: the API then ranks its answers with it.",
        ),
    ] = False,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Choose the hyperparameters on the data's own temporal validation split (the "
            "grid of `recsys evaluate`) instead of the served defaults, tuned for ml-100k; "
            "what `recsys up` does. Not with --params.",
        ),
    ] = False,
) -> None:
    """Train a model on a dataset (or on the event archive) and publish it as the active model
    version.

    Item vectors with their payload go to Qdrant; user vectors, popularity and the item factors
    the stream worker needs go to Redis; then readers switch to the new version atomically.

    Needs Redis (see `recsys services up`) and Qdrant (embedded by default, or RECSYS_QDRANT_URL).
    """
    try:
        hyper: dict[str, Any] = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from None
    if tune and hyper:
        raise typer.BadParameter("--tune chooses the hyperparameters: drop --params, or --tune")
    window = archive_window(source, since, until)
    from batch.train import TrainError, train_and_publish

    try:
        label = window.label if window is not None else dataset
        with stage_bars(console, train_stage_labels(label, model)) as report:
            summary = train_and_publish(
                Settings(), dataset, model, data_dir, hyper or None, keep_versions, skip_malformed,
                report, archive=window, ranker=ranker, tuned=tune,
            )  # fmt: skip
    except TrainError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if summary["tuning"] is not None:
        tuning = summary["tuning"]
        console.print(
            f"chose {tuning['params']} on the {tuning['protocol']}: NDCG@10 "
            f"{tuning['validation_ndcg_at_10']:.4f} (most-popular "
            f"{tuning['most_popular_validation_ndcg_at_10']:.4f})"
        )
    skipped = summary["skipped_rows"]
    console.print(
        f"{summary['dataset']}: {summary['interactions']:,} interactions, "
        f"{summary['users']:,} users, {summary['items']:,} items"
        + (f", {skipped:,} malformed rows skipped" if skipped else "")
    )
    console.print(
        f"[green]Published version {summary['version']}[/green]: fit {summary['fit_seconds']} s, "
        f"publish {summary['publish_seconds']} s, total {summary['total_seconds']} s, "
        f"peak RSS {summary['peak_rss_mib']} MiB"
    )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        from core.provenance import provenance

        json_path.write_text(json.dumps(summary | provenance(), indent=2, default=str))
