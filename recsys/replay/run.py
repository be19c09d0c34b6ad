"""`recsys replay`: protocol P3 end to end.

1. Tuning run (fit on the first 80% of rows, replay [80%, 90%)): the EMA weights and the fold-in
   prior are chosen by replaying the stream's update rules in process
   (`batch.evaluation.online_updates`), on this run only.
2. Report run (fit on the first 90%, replay the last 10%): an ALS model is trained on the fit
   rows and published; then every live configuration replays the events through fresh Kafka and
   Redis, the worker and the API (`recsys.replay.live`). The popularity baselines and the
   in-process replays of the chosen parameters are scored on the same events for comparison.
3. The two-stage configurations (`ranked`, `ranker-off`) serve the report model with the ranking
   stage learned at a cut of its own fit rows (`batch.ranking.train`); their stream first runs
   over the fit rows before the model is published (history, trending and the transition table
   as a running system would have them; nobody gets a vector from them), live through Kafka and
   in process alike. With several event types the live warm-up's order across topics is the
   worker's, not the file's, so the two agree exactly only for one-type data (ratings).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

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
from recsys.replay.live import LiveConfig, LiveOutcome, replay_live, warm_up
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
    live: tuple[str, ...] = ("static", "ema", "fold-in", "ema-async", "ranked", "ranker-off")


StartProgress = Callable[[str, int], Callable[[int], None]]  # (label, total) -> advance


def _train(split: PrequentialSplit, dataset_name: str) -> tuple[ModelArtifacts, float]:
    from batch.train import to_artifacts, train

    trained = train(split.fit, "als")
    return to_artifacts(trained, dataset_name, "als"), trained.fit_seconds


def _with_ranker(
    split: PrequentialSplit, artifacts: ModelArtifacts, ema: OnlineUpdateParams
) -> tuple[ModelArtifacts, dict[str, Any]]:
    """The report model with the ranking stage learned at a cut of its own fit rows."""
    from batch.models.base import build_train_data
    from batch.ranking.train import with_ranker
    from batch.train import catalog_of, fitted_artifacts

    fit = split.fit
    ranked = replace(artifacts)  # the report model as it is, plus the ranking parts

    def artifacts_of(rows: Any) -> Any:
        if len(rows) == len(fit.interactions):
            return ranked, build_train_data(rows, catalog_of(fit), fit.items, fit.users)
        return fitted_artifacts(fit, rows, "als")

    return with_ranker(fit, fit.interactions, artifacts_of, Settings(), ema)


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
        "ranked": LiveConfig("ranked", ema, two_stage=True),
        "ranker-off": LiveConfig("ranker-off", ema, two_stage=True, ranker=False),
    }
    unknown = set(options.live) - every.keys()
    if unknown:
        raise ValueError(
            f"unknown live configurations {sorted(unknown)}; choose from {list(every)}"
        )
    return [every[name] for name in options.live]


def _two_stage_env(config: LiveConfig) -> dict[str, str]:
    if not config.two_stage:
        return {}
    return {
        "RECSYS_API_CLOCK": "events",
        "RECSYS_API_RANKER": "on" if config.ranker else "off",
    }


@contextmanager
def _stack(
    config: LiveConfig, artifacts: ModelArtifacts, fit_rows: pd.DataFrame
) -> Iterator[tuple[Settings, str]]:
    """Fresh Kafka and Redis, the model published, the API and (with updates) one worker. For
    the two-stage configurations the worker first applies the fit rows, before the model is
    published (`recsys.replay.live.warm_up`), as the in-process replay does."""
    from recsys.bench.api import serving
    from recsys.bench.common import bench_services, service_env
    from recsys.processes import WorkerProcess
    from streams.model_cache import REFRESH_S

    with bench_services(False, f"recsys-replay-{config.name}-") as (settings, work_dir):
        worker = None
        if config.updates is not None:
            extra = config.updates.settings_env() | {"RECSYS_STREAM_BATCH_WAIT_MS": "1"}
            extra |= _two_stage_env(config)
            worker = WorkerProcess(settings, work_dir, f"replay-{config.name}", env=extra)
            if config.two_stage:
                worker.start()
                asyncio.run(warm_up(fit_rows, settings))
        asyncio.run(publish_configured(artifacts, settings))
        if worker is not None:
            if config.two_stage:
                time.sleep(REFRESH_S + 1)  # until the worker has seen the version switch
            else:
                worker.start()
        try:
            # The replay's requests probe the live path; nobody is shown them. Recorded as
            # impressions they would make the worker demote items asked about repeatedly
            # (feedback fatigue), and the live figures would no longer measure the model.
            probing = service_env(
                settings, RECSYS_API_IMPRESSIONS_SAMPLE="0", **_two_stage_env(config)
            )
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
    configs = _live_configs(options, ema, fold)
    ranked_artifacts, ranker_summary = artifacts, None
    if any(config.two_stage for config in configs):
        from batch.ranking.mirror import MirrorConfig, replay_scores

        log("training the ranker at a cut of the fit rows")
        ranked_artifacts, ranker_summary = _with_ranker(split, artifacts, ema)
        mirrored = MirrorConfig.from_settings(Settings(), ema)
        for name, on in (("ranked", True), ("ranker-off", False)):
            scores = replay_scores(split, ranked_artifacts, mirrored, on, options.depth)
            configurations[f"in-process-{name}"] = _summary(scores)

    diversities: Sequence[float] = (HEADLINE_DIVERSITY, options.default_diversity)
    for config in configs:
        advance = start_progress(config.name, len(split.replay))
        served = ranked_artifacts if config.two_stage else artifacts
        with _stack(config, served, split.fit.interactions) as (settings, api_url):
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
        "ranker": ranker_summary,
        "tuning": {
            mode: {"chosen": result.chosen.describe(), "grid": result.grid}
            for mode, result in tuned.items()
        },
        "configurations": configurations,
    }
