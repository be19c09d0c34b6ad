"""`recsys train`: fit a servable model on a dataset and publish it as the active version."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from recsys.progress import progress_bars
from recsys.settings import Settings, mask_url_password

console = Console()


class TrainError(RuntimeError):
    """Training or publishing failed in a way the user can fix; the message says how."""


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_and_publish(
    settings: Settings,
    dataset: str,
    model: str = "als",
    data_dir: Path | None = None,
    params: dict[str, Any] | None = None,
    keep_versions: int = 3,
    skip_malformed: bool = False,
) -> dict[str, Any]:
    """Load `dataset`, fit `model`, publish it; returns timings and the new version."""
    # Imported here so that `recsys --help` and the other commands start fast.
    from redis.exceptions import RedisError

    from batch.data import DatasetError
    from batch.datasets import load_dataset
    from batch.train import to_artifacts, train

    started = time.perf_counter()
    try:
        with console.status(f"Loading {dataset}…"):
            loaded = load_dataset(
                dataset, data_dir or settings.data_dir, skip_malformed=skip_malformed
            )
        load_seconds = time.perf_counter() - started
        console.print(
            f"{loaded.name}: {loaded.n_interactions:,} interactions, "
            f"{loaded.interactions['user_id'].nunique():,} users, {len(loaded.items):,} items"
            + (f", {loaded.skipped_rows:,} malformed rows skipped" if loaded.skipped_rows else "")
        )
        with progress_bars(console) as bars:
            task = bars.add_task(f"Training {model}", total=None)
            trained = train(
                loaded,
                model,
                params,
                lambda done, total: bars.update(task, completed=done, total=total),
            )
    except (DatasetError, ValueError, TypeError) as exc:
        raise TrainError(str(exc)) from exc
    console.print(f"Trained {model} in {trained.fit_seconds:.1f} s")
    artifacts = to_artifacts(trained, loaded.name, model)
    publish_started = time.perf_counter()
    try:
        version = asyncio.run(_publish(settings, artifacts, keep_versions))
    except (RedisError, OSError) as exc:
        raise TrainError(
            f"Redis at {mask_url_password(settings.redis_url)} failed ({exc}). Start the local "
            "services with `recsys services up`, or set RECSYS_REDIS_URL."
        ) from exc
    publish_seconds = time.perf_counter() - publish_started
    return {
        "dataset": loaded.name,
        "model": model,
        "version": version,
        "interactions": loaded.n_interactions,
        "skipped_rows": loaded.skipped_rows,
        "users": len(artifacts.user_ids),
        "items": len(artifacts.item_ids),
        "load_seconds": round(load_seconds, 2),
        "fit_seconds": round(trained.fit_seconds, 2),
        "publish_seconds": round(publish_seconds, 2),
        "train_and_publish_seconds": round(trained.fit_seconds + publish_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "params": artifacts.params,
    }


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
) -> None:
    """Train a model on a dataset and publish it as the active model version.

    Item vectors with their payload go to Qdrant; user vectors, popularity and the item factors
    the stream worker needs go to Redis; then readers switch to the new version atomically.

    Needs Redis (see `recsys services up`) and Qdrant (embedded by default, or RECSYS_QDRANT_URL).
    """
    try:
        hyper: dict[str, Any] = json.loads(params)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--params is not JSON: {exc}") from None
    try:
        summary = train_and_publish(
            Settings(), dataset, model, data_dir, hyper, keep_versions, skip_malformed
        )
    except TrainError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"[green]Published version {summary['version']}[/green]: fit {summary['fit_seconds']} s, "
        f"publish {summary['publish_seconds']} s, total {summary['total_seconds']} s, "
        f"peak RSS {summary['peak_rss_mib']} MiB"
    )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        from recsys.benchmarks import provenance

        json_path.write_text(json.dumps(summary | provenance(), indent=2, default=str))


async def _publish(settings: Settings, artifacts: Any, keep_versions: int) -> str:
    from batch.publish import publish_configured

    labels = {"index": "Qdrant vectors", "seal": "Qdrant index", "redis": "Redis"}
    with progress_bars(console) as bars:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(labels.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        return await publish_configured(
            artifacts, settings, keep_versions=keep_versions, progress=report
        )
