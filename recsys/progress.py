"""The one look of long-running work on the console: description, bar, n/total, time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


def progress_bars(console: Console, *extra: ProgressColumn) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=console,
    )


@contextlib.contextmanager
def stage_bars(
    console: Console, labels: dict[str, str]
) -> Iterator[Callable[[str, int, int | None], None]]:
    """Bars for work reported as (stage, done, total): one bar a stage, labelled from `labels`,
    added when the stage first reports (`batch.train.train_and_publish`'s progress)."""
    with progress_bars(console) as bars:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(labels.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield report


def train_stage_labels(dataset: str, model: str) -> dict[str, str]:
    """What the bars of `train_and_publish`'s stages say."""
    return {
        "load": f"Loading {dataset}",
        "tune": f"Tuning {model} on its validation split",
        "fit": f"Training {model}",
        "ranker": "Ranker: replaying the inner cut",
        "index": "Qdrant vectors",
        "seal": "Qdrant index",
        "redis": "Redis",
    }
