"""`recsys bench loop`: the closed loop end to end on a MovieLens dataset.

On throwaway local Kafka and Redis (and an embedded Qdrant shard in a scratch directory):

1. every rating is replayed through Kafka as `recsys simulate --replay` publishes it (a
   purchase, with its original time), as fast as the producer goes;
2. one archiver process (`recsys archive run`) writes them into the Delta table;
3. the interaction log read back from the table (`recsys train --source archive` reads it so)
   is compared with the file's rows as they were published: the same rows, none lost, none
   twice; and the served ALS configuration is scored under P1 on both, so the two NDCG@10
   must agree (issue 17: within 0.001). The file's own figure (ratings weighing 1, not as
   purchases) is reported beside them;
4. `recsys retrain` runs once on the archive (its window covering the dataset's years): with no
   active version its candidate is published, and its gate decision is recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings

# P1's figures of one configuration on one source of rows.
_FIGURES = ("ndcg@10", "ndcg@10_se", "ndcg@10_ci95", "hr@10", "recall@10")


@dataclass(frozen=True)
class LoopBenchConfig:
    dataset: str = "ml-100k"
    drain_timeout_s: float = 900.0
    seed: int = 0


def _as_published(dataset: Any) -> Any:
    """The file's rows as the replay publishes them: each rating a purchase (its weight)."""
    from batch.data import Dataset
    from batch.datasets.frames import interactions_frame
    from schemas.events import stream_event_type

    rows = dataset.interactions
    events = rows["event_type"].map(lambda kind: stream_event_type(str(kind)))
    interactions = interactions_frame(
        rows["user_id"], rows["item_id"], rows["ts"].to_numpy(), events
    )
    return Dataset(f"{dataset.name} (as published)", interactions, dataset.items)


def _p1(dataset: Any, seed: int) -> dict[str, Any]:
    from batch.evaluation.names import Protocol
    from batch.evaluation.runner import evaluate_configuration
    from batch.models.registry import SERVED_ALS_PARAMS

    result = evaluate_configuration(dataset, Protocol.TEMPORAL, "als", SERVED_ALS_PARAMS, seed)
    return {k: result.metrics[k] for k in _FIGURES} | {
        "fit_seconds": round(result.fit_seconds, 2),
        "rows": dataset.n_interactions,
    }


def _same_rows(published: Any, archived: Any) -> dict[str, Any]:
    """Whether the archive holds exactly the published rows (as multisets)."""
    columns = ["user_id", "item_id", "ts", "event_type"]
    left = published.interactions[columns].value_counts()
    right = archived.interactions[columns].value_counts()
    joined = left.to_frame("published").join(right.to_frame("archived"), how="outer").fillna(0)
    return {
        "published": int(left.sum()),
        "archived": int(right.sum()),
        "missing": int((joined["published"] - joined["archived"]).clip(lower=0).sum()),
        "extra": int((joined["archived"] - joined["published"]).clip(lower=0).sum()),
        "identical": bool((joined["published"] == joined["archived"]).all()),
    }


async def _replay(settings: Settings, interactions: Any) -> dict[str, Any]:
    from core.clients import ensure_topics, kafka_producer
    from recsys.simulator import publish_scheduled, replay_schedule

    await ensure_topics(settings)
    producer = kafka_producer(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        stats = await publish_scheduled(
            producer, replay_schedule(interactions, speed=1e12), len(interactions), 600.0
        )
    finally:
        await producer.stop()
    if stats.errors:
        raise RuntimeError(f"{stats.errors} events failed to publish: {stats.first_error}")
    return {"events": stats.sent, "seconds": stats.seconds}


async def _archive(settings: Settings, work_dir: Path, events: int, timeout_s: float) -> Any:
    from recsys.bench.archive import drain
    from recsys.processes import ArchiverProcess

    archiver = ArchiverProcess(settings, work_dir).start()
    try:
        drained = await drain(archiver, events, timeout_s)
    finally:
        archiver.stop()
    drained.pop("series")
    return drained


def run(
    settings: Settings, config: LoopBenchConfig, data_dir: Path, work_dir: Path
) -> dict[str, Any]:
    from batch.datasets import load_dataset
    from batch.datasets.archive import ArchiveWindow, load_archive
    from batch.retrain.run import RetrainOptions, retrain_once
    from core.archive import ArchiveLocation

    settings = settings.model_copy(
        update={
            "archive_uri": str(work_dir / "archive" / "events"),
            "qdrant_path": work_dir / "qdrant",
            "archive_group_id": f"recsys-bench-loop-{time.time_ns()}",
        }
    )
    dataset = load_dataset(config.dataset, data_dir)
    published = _as_published(dataset)
    replayed = asyncio.run(_replay(settings, dataset.interactions))
    archived_run = asyncio.run(
        _archive(settings, work_dir, replayed["events"], config.drain_timeout_s)
    )
    read_started = time.perf_counter()
    archived = load_archive(ArchiveLocation.of(settings), ArchiveWindow(), items=dataset.items)
    read_seconds = time.perf_counter() - read_started
    figures = {
        "file": _p1(dataset, config.seed),
        "file_as_published": _p1(published, config.seed),
        "archive": _p1(archived, config.seed),
    }
    # Its window reaches back over the dataset's years; the newest 10% is held out.
    years = (time.time() - float(dataset.interactions["ts"].min())) / 86_400 + 1
    decision = retrain_once(settings, RetrainOptions.from_settings(settings, window_days=years))
    return {
        "benchmark": "loop",
        "config": asdict(config),
        "replay": replayed,
        "archive": archived_run,
        "read_archive_seconds": round(read_seconds, 2),
        "rows": _same_rows(published, archived),
        "p1": figures,
        "ndcg_difference": abs(
            figures["archive"]["ndcg@10"] - figures["file_as_published"]["ndcg@10"]
        ),
        "retrain": decision,
    }


def run_with_local_services(config: LoopBenchConfig, data_dir: Path) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    with bench_services(False, "recsys-bench-loop-") as (settings, work_dir):
        return run(settings, config, data_dir, work_dir)
