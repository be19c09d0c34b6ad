"""`recsys data`: download, generate and describe datasets."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from batch.datasets.download import ARCHIVES, GROUPLENS_BASE_URL, download_dataset
from batch.errors import DatasetError
from core.settings import Settings

if TYPE_CHECKING:
    from batch.data import Dataset

app = typer.Typer(
    help=(
        "Datasets: download MovieLens from GroupLens, generate synthetic event logs, and "
        "describe any dataset. Files are read from and downloaded to RECSYS_DATA_DIR."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
errors = Console(stderr=True)

T = TypeVar("T")


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Dataset directory (default: RECSYS_DATA_DIR, see `recsys config`)."
    ),
]


@app.command()
def download(
    name: Annotated[str, typer.Argument(help=f"Dataset to download: {', '.join(ARCHIVES)}.")],
    data_dir: DataDirOption = None,
    base_url: Annotated[
        str, typer.Option("--base-url", help="Where the archives live (a GroupLens mirror).")
    ] = GROUPLENS_BASE_URL,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
) -> None:
    """Download a MovieLens archive, verify its MD5 and unpack it into the data directory.

    Does nothing when the dataset is already there. Nothing half-written is left behind
    when the download fails or the checksum does not match.
    """
    directory = data_dir or Settings().data_dir
    result = exit_on_dataset_error(
        lambda: download_dataset(name, directory, base_url=base_url, force=force)
    )
    if result.downloaded:
        console.print(f"{name} downloaded to {result.path} (MD5 {result.md5})", markup=False)
    else:
        console.print(f"{name} is already present in {result.path}", markup=False)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Output .parquet file for the interactions.")],
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 2_000,
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")] = 500,
    events: Annotated[int, typer.Option("--events", min=1, help="Number of event rows.")] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same data.")] = 0,
) -> None:
    """Generate a synthetic event log (views, clicks, purchases) and write it as Parquet.

    Writes OUT, plus <stem>.items.parquet and <stem>.users.parquet beside it; `recsys data
    info OUT` and `load_dataset(OUT, ...)` read all three back.
    """
    # Imported here so that `recsys --help` and the other commands start fast.
    from batch.datasets.synthetic import SyntheticConfig, generate_synthetic

    if out.suffix.lower() != ".parquet":
        _fail(f"--out must end in .parquet, got {out}")
    config = exit_on_dataset_error(
        lambda: SyntheticConfig(n_users=users, n_items=items, n_events=events, seed=seed)
    )
    with console.status(f"Generating {events:,} events…"):
        dataset = exit_on_dataset_error(lambda: generate_synthetic(config))
    stem = out.name.split(".")[0]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        dataset.interactions.to_parquet(out, index=False)
        dataset.items.to_parquet(out.with_name(f"{stem}.items.parquet"), index=False)
        if dataset.users is not None:
            dataset.users.to_parquet(out.with_name(f"{stem}.users.parquet"), index=False)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc}")
    console.print(
        f"wrote {dataset.n_interactions:,} events to {out} (+ items, users)", markup=False
    )


@app.command()
def info(
    name: Annotated[
        str,
        typer.Argument(
            help=f"{', '.join(ARCHIVES)}, synthetic, synthetic:users=..,items=..,events=..,"
            "seed=.., or a .csv/.parquet file."
        ),
    ],
    data_dir: DataDirOption = None,
    skip_malformed: Annotated[
        bool, typer.Option("--skip-malformed", help="Skip malformed rows instead of failing.")
    ] = False,
) -> None:
    """Describe a dataset: rows, users, items, time span, density, event types, skipped rows."""
    from batch.datasets import load_dataset

    directory = data_dir or Settings().data_dir
    dataset = exit_on_dataset_error(
        lambda: load_dataset(name, directory, skip_malformed=skip_malformed)
    )
    table = Table(title=dataset.name, show_header=False)
    for key, value in describe(dataset).items():
        table.add_row(key, value)
    console.print(table)


def describe(dataset: Dataset) -> dict[str, str]:
    """The figures `recsys data info` prints, as text."""
    frame = dataset.interactions
    n_users, n_items = frame["user_id"].nunique(), frame["item_id"].nunique()
    first, last = (
        datetime.fromtimestamp(int(t), UTC) for t in (frame["ts"].min(), frame["ts"].max())
    )
    counts = frame["event_type"].value_counts()
    return {
        "rows": f"{len(frame):,}",
        "users": f"{n_users:,}",
        "items": f"{n_items:,} with interactions, {len(dataset.items):,} in the catalog",
        "time span": f"{first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC "
        f"({(last - first).days} days)",
        "density": f"{len(frame) / (n_users * n_items):.4%}",
        "event types": ", ".join(f"{kind} {count:,}" for kind, count in counts.items()),
        "skipped rows": f"{dataset.skipped_rows:,}",
    }


def exit_on_dataset_error(action: Callable[[], T]) -> T:
    """Run `action`; a `DatasetError` becomes a one-line message and exit code 1 (for every
    command that loads a dataset)."""
    try:
        return action()
    except DatasetError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)
