"""`recsys replay`: protocol P3 end to end.

1. Tuning run (fit on the first 80% of rows, replay [80%, 90%)): the EMA weights and the fold-in
   prior are chosen by replaying the stream's update rules in process
   (`batch.evaluation.online_updates`), on this run only.
2. Report run (fit on the first 90%, replay the last 10%): an ALS model is trained on the fit
   rows and published; then every live configuration replays the events through fresh Kafka and
   Redis, the worker and the API (`recsys.replay.live`). The popularity baselines and the
   in-process replays of the chosen parameters are scored on the same events for comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batch.data import Dataset
from batch.evaluation.online_updates import OnlineUpdateParams, simulate, tune
from batch.evaluation.prequential import (
    PrequentialScores,
    PrequentialSplit,
    ReplayRun,
    p3_split,
    popularity_baselines,
)
from batch.publish import ModelArtifacts, publish_configured
from core.settings import Settings
from recsys.replay.live import LiveConfig, LiveOutcome, replay_live
from schemas.events import EventType

HEADLINE_DIVERSITY = 1.0  # MMR off: the figures comparable with the offline protocols


@dataclass(frozen=True)
class ReplayOptions:
    dataset: str
    data_dir: Path
    limit: int | None = None  # replay only the first N events of each run (smoke runs)
    async_rate: float = 100.0
    default_diversity: float = 0.8
    depth: int = 100  # items asked of the API per event (MRR is truncated there)
    live: tuple[str, ...] = ("static", "ema", "fold-in", "ema-async")


StartProgress = Callable[[str, int], Callable[[int], None]]  # (label, total) -> advance


def _train(split: PrequentialSplit, dataset_name: str) -> tuple[ModelArtifacts, float]:
    from batch.train import to_artifacts, train

    trained = train(split.fit, "als")
    return to_artifacts(trained, dataset_name, "als"), trained.fit_seconds


def _summary(scores: dict[float, PrequentialScores] | PrequentialScores) -> dict[str, Any]:
    """One configuration: the headline overall figures as top-level keys, then the split by
    warm/cold users, per diversity where the API was asked."""
    if isinstance(scores, PrequentialScores):
        scores = {HEADLINE_DIVERSITY: scores}
    headline = scores[HEADLINE_DIVERSITY].summary()
    entry: dict[str, Any] = {
        **headline["overall"],
        "warm": headline["warm"],
        "cold": headline["cold"],
        "hr_over_time": scores[HEADLINE_DIVERSITY].hr_over_time(),
    }
    for diversity, other in scores.items():
        if diversity != HEADLINE_DIVERSITY and other.hits:  # async mode asks one only
            entry[f"diversity_{diversity:g}"] = other.summary()
    return entry


def _live_configs(
    options: ReplayOptions, ema: OnlineUpdateParams, fold: OnlineUpdateParams
) -> list[LiveConfig]:
    every = {
        "static": LiveConfig("static", None),
        "ema": LiveConfig("ema", ema),
        "fold-in": LiveConfig("fold-in", fold),
        "ema-async": LiveConfig("ema-async", ema, rate=options.async_rate),
    }
    unknown = set(options.live) - every.keys()
    if unknown:
        raise ValueError(
            f"unknown live configurations {sorted(unknown)}; choose from {list(every)}"
        )
    return [every[name] for name in options.live]


@contextmanager
def _stack(config: LiveConfig, artifacts: ModelArtifacts) -> Iterator[tuple[Settings, str]]:
    """Fresh Kafka and Redis, the model published, the API and (with updates) one worker."""
    from recsys.bench.api import serving
    from recsys.bench.common import bench_services, service_env
    from recsys.processes import WorkerProcess

    with bench_services(False, f"recsys-replay-{config.name}-") as (settings, work_dir):
        asyncio.run(publish_configured(artifacts, settings))
        worker = None
        if config.updates is not None:
            extra = config.updates.settings_env() | {"RECSYS_STREAM_BATCH_WAIT_MS": "1"}
            worker = WorkerProcess(settings, work_dir, f"replay-{config.name}", env=extra)
            worker.start()
        try:
            # The replay's requests probe the live path; nobody is shown them. Recorded as
            # impressions they would make the worker demote items asked about repeatedly
            # (feedback fatigue), and the live figures would no longer measure the model.
            probing = service_env(settings, RECSYS_API_IMPRESSIONS_SAMPLE="0")
            with serving(probing, 1, work_dir) as server:
                yield settings, server.base_url
        finally:
            if worker is not None:
                worker.stop()


def _freshness(outcome: LiveOutcome) -> dict[str, Any] | None:
    if outcome.achieved_rate is None:
        return None
    from recsys.bench.common import percentiles

    return {
        "offered_rate": None,
        "achieved_rate": round(outcome.achieved_rate, 1),
        "seconds": percentiles(outcome.freshness_s),
        "observed": len(outcome.freshness_s),
    }


def run_replay(
    options: ReplayOptions, start_progress: StartProgress, log: Callable[[str], None]
) -> dict[str, Any]:
    from batch.datasets import load_dataset

    dataset: Dataset = load_dataset(options.dataset, options.data_dir)
    defaults = Settings()
    default_weights: dict[EventType, float] = {
        "view": defaults.stream_ema_view,
        "click": defaults.stream_ema_click,
        "purchase": defaults.stream_ema_purchase,
    }

    tuning_split = p3_split(dataset, ReplayRun.TUNING, options.limit)
    log(
        f"tuning run: fit {len(tuning_split.fit.interactions):,} rows, "
        f"replay {len(tuning_split.replay):,}"
    )
    tuning_model, _ = _train(tuning_split, dataset.name)
    tuned = {
        mode: tune(tuning_split, tuning_model, mode, default_weights) for mode in ("ema", "fold-in")
    }
    ema, fold = tuned["ema"].chosen, tuned["fold-in"].chosen
    log(f"chosen on the tuning run: {ema.describe()}, {fold.describe()}")

    split = p3_split(dataset, ReplayRun.REPORT, options.limit)
    artifacts, fit_seconds = _train(split, dataset.name)
    catalog = [str(i) for i in artifacts.item_ids]
    configurations: dict[str, Any] = {}
    for name, scores in popularity_baselines(split, catalog).items():
        configurations[name] = _summary(scores)
    for params in (ema, fold):
        configurations[f"in-process-{params.mode}"] = _summary(simulate(split, artifacts, params))

    diversities: Sequence[float] = (HEADLINE_DIVERSITY, options.default_diversity)
    for config in _live_configs(options, ema, fold):
        advance = start_progress(config.name, len(split.replay))
        with _stack(config, artifacts) as (settings, api_url):
            outcome = asyncio.run(
                replay_live(split, config, api_url, settings, diversities, options.depth, advance)
            )
        entry = _summary(outcome.scores)
        entry["mode"] = "sync" if config.rate is None else "async"
        entry["stream_updates"] = None if config.updates is None else config.updates.describe()
        entry["sources"] = {f"{d:g}": dict(c) for d, c in outcome.sources.items()}
        entry["seconds"] = round(outcome.seconds, 1)
        if (freshness := _freshness(outcome)) is not None:
            freshness["offered_rate"] = config.rate
            entry["freshness"] = freshness
        configurations[config.name] = entry

    return {
        "benchmark": "replay",
        "protocol": "P3",
        "dataset": dataset.name,
        "options": {**asdict(options), "data_dir": str(options.data_dir)},
        "fit_rows": len(split.fit.interactions),
        "replayed_events": len(split.replay),
        "model": {"name": "als", "params": artifacts.params, "fit_seconds": round(fit_seconds, 2)},
        "tuning": {
            mode: {"chosen": result.chosen.describe(), "grid": result.grid}
            for mode, result in tuned.items()
        },
        "configurations": configurations,
    }
