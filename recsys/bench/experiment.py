"""`recsys bench experiment`: a bounded simulated A/B run through the whole stack.

On throwaway local Kafka and Redis (and an embedded Qdrant shard):

1. a synthetic catalog (the generator's items: genres, Zipf popularity) and simulated users
   (`recsys.respond`) whose own browsing is the training set: ALS learns their tastes and is
   published;
2. one stream worker and the API (`recsys serve`) run; an experiment with three arms starts:
   the model (the control), the model with more diversity, and random items;
3. the responding simulator requests answers and clicks and buys from them by its hidden taste
   and a position bias; the worker credits each click to its arm; the report is built from the
   worker's counters, and from its time buckets the impressions it took until each arm stayed
   separated from the control (p < 0.01);
4. /recommend at a fixed rate in alternating rounds with an experiment (two arms that serve the
   same) and without: the p50 the experiment adds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batch.data import Dataset
from core.experiments import Arm, Experiment, Rate, compare
from core.rules import EVENT_WEIGHTS
from core.settings import Settings
from recsys.respond import BehaviourConfig, BehaviourModel
from recsys.simulator import Catalog

SEPARATED_P = 0.01
ARM_NAMES = ("model", "diverse", "random")


@dataclass(frozen=True)
class ExperimentBenchConfig:
    users: int = 1500
    items: int = 500
    # The training set: this many simulated visits' own browsing.
    training_visits: int = 30_000
    requests: int = 6000
    rate: float = 40.0
    max_seconds: float = 600.0
    k: int = 10
    diverse_lambda: float = 0.3
    bucket_s: int = 5
    workers: int = 2
    latency_rounds: int = 10
    latency_seconds: float = 15.0
    latency_rate: int = 100
    seed: int = 0


def browsing_dataset(model: BehaviourModel, visits: int, start_ts: int = 1_700_000_000) -> Dataset:
    """What the simulated users browse on their own over `visits` visits, as a training set
    over the model's catalog: a model fit on it learns the tastes the users click by."""
    rows: list[tuple[str, str, int, str]] = []
    for n in range(visits):
        visit = model.visit(n, 0.0)
        for action in visit.browse:
            rows.append((visit.user_id, action.item_id, start_ts + len(rows), action.kind))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type"])
    interactions["weight"] = interactions["event_type"].map(EVENT_WEIGHTS).astype(np.float32)
    return Dataset(
        name="simulated-browsing", interactions=interactions, items=catalog_items(model.catalog)
    )


def catalog_items(catalog: Catalog) -> pd.DataFrame:
    """A simulated catalog as a dataset's items (ids for titles, no years)."""
    return pd.DataFrame(
        {
            "item_id": catalog.item_ids,
            "title": catalog.item_ids,
            "genres": catalog.genres,
            "year": pd.array([None] * len(catalog.item_ids), dtype="Int64"),
        }
    )


def synthetic_catalog(items: int, seed: int) -> Catalog:
    """The synthetic generator's items, weighted by their popularity in its event log."""
    from batch.datasets.synthetic import SyntheticConfig, generate_synthetic

    generated = generate_synthetic(
        SyntheticConfig(n_items=items, n_users=500, n_events=20_000, seed=seed)
    )
    counts = generated.interactions["item_id"].value_counts()
    ids = [str(i) for i in generated.items["item_id"]]
    weights = np.asarray([counts.get(i, 0) + 1.0 for i in ids])
    genres = [tuple(g) for g in generated.items["genres"]]
    return Catalog(ids, genres, weights / weights.sum())


def separation(buckets: list[dict[str, Any]], arm: str, control: str) -> dict[str, Any]:
    """From the report's time buckets: the p-value of `arm`'s CTR against the control's after
    each bucket, and the impressions (of both arms) from which it stayed below `SEPARATED_P`."""
    totals = {arm: [0, 0], control: [0, 0]}
    curve = []
    for bucket in buckets:
        for name in (arm, control):
            counts = bucket["arms"].get(name, {})
            totals[name][0] += counts.get("clicked_impressions", 0)
            totals[name][1] += counts.get("impressions", 0)
        # Clicks are bucketed by their own time, impressions by theirs: a prefix may hold a
        # click whose answer's impression falls in the next bucket.
        found = compare(*(Rate(min(c, n), n) for c, n in (totals[arm], totals[control])))
        curve.append({"impressions": totals[arm][1] + totals[control][1], "p_value": found.p_value})
    separated_at = None
    for point in curve:
        below = point["p_value"] < SEPARATED_P
        if below and separated_at is None:
            separated_at = point["impressions"]
        elif not below:
            separated_at = None
    return {"curve": curve, "separated_at_impressions": separated_at}


def _experiment(config: ExperimentBenchConfig) -> Experiment:
    return Experiment(
        "bench",
        (
            Arm("model", 1 / 3),
            Arm("diverse", 1 / 3, {"diversity": config.diverse_lambda}),
            Arm("random", 1 / 3, {"random": True}),
        ),
        salt=f"bench-{config.seed}",
    )


async def _simulate(
    settings: Settings, model: BehaviourModel, base_url: str, config: ExperimentBenchConfig
) -> Any:
    from core import experiment_store
    from core.clients import redis_client_for
    from recsys.respond import RunOptions, api_client, run_respond

    redis = redis_client_for(settings)
    try:
        await experiment_store.create(redis, _experiment(config), time.time())
        await asyncio.sleep(2 * 0.5)  # every API worker reads it (refresh 0.5 s)
        options = RunOptions(
            max_requests=config.requests, max_seconds=config.max_seconds, rate=config.rate,
            k=config.k, event_batch=200,
        )  # fmt: skip
        async with api_client(base_url, None, options.timeout_s) as client:
            result = await run_respond(client, model, options)
        # Every answer is counted once the worker has read its impression.
        deadline = time.monotonic() + 180
        counts: dict[int, dict[tuple[str, str], int]] = {}
        while time.monotonic() < deadline:
            counts = await experiment_store.read_counts(redis, "bench")
            shown = sum(n for b in counts.values() for (_, o), n in b.items() if o == "impressions")
            if shown >= result.answered:
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # the last clicks, posted after their answers
        counts = await experiment_store.read_counts(redis, "bench")
        registered = await experiment_store.registered(redis, "bench")
        await experiment_store.stop(redis, "bench", time.time())
        return result, registered, counts
    finally:
        await redis.aclose()


def assignment_cost_us(experiment: Experiment, users: int = 100_000) -> float:
    """What an experiment adds to a request in CPU: the arm's assignment (a salted BLAKE2b of
    the user id) and the query's copy with the arm's parameters, per request, in µs."""
    from dataclasses import replace as copy_with

    from api.recommender import RecommendQuery
    from core.experiments import assign

    query = RecommendQuery(user_id="u", k=10, diversity=0.8)
    ids = [f"user-{n}" for n in range(users)]
    started = time.perf_counter()
    for user in ids:
        params = assign(experiment, user).params
        copy_with(
            query,
            user_id=user,
            diversity=params.get("diversity", query.diversity),
            version=params.get("version"),
            ranker=params.get("ranker"),
            quotas=params.get("sources"),
        )
    return (time.perf_counter() - started) / users * 1e6


def _latency_rounds(
    settings: Settings, server: Any, users: list[str], config: ExperimentBenchConfig
) -> dict[str, Any]:
    """Alternating fixed-rate rounds without and with an experiment whose two arms serve the
    same answers: what assignment and labelling cost, nothing else."""
    from core import experiment_store
    from core.clients import redis_client_for
    from recsys.bench.api import recommend_paths
    from recsys.bench.open_loop import run_open_loop

    async def switch(round_no: int, on: bool) -> None:
        redis = redis_client_for(settings)
        try:
            experiment = Experiment(
                f"latency-{round_no}", (Arm("a", 0.5), Arm("b", 0.5)), salt="latency"
            )
            if on:
                await experiment_store.create(redis, experiment, time.time())
            elif await experiment_store.running(redis) is not None:
                await experiment_store.stop(redis, f"latency-{round_no - 1}", time.time())
        finally:
            await redis.aclose()
        await asyncio.sleep(1.5)  # every API worker sees it (refresh 0.5 s)

    count = int(config.latency_rate * config.latency_seconds)
    rounds: dict[str, list[dict[str, Any]]] = {"none": [], "experiment": []}
    warm = recommend_paths(users, config.latency_rate * 5, config.k, 0.8, config.seed + 7)
    run_open_loop("127.0.0.1", server.port, warm, config.latency_rate, False, 64)
    for n in range(2 * config.latency_rounds):
        on = n % 2 == 1
        asyncio.run(switch(n, on))
        paths = recommend_paths(users, count, config.k, 0.8, config.seed + n)
        found = run_open_loop("127.0.0.1", server.port, paths, config.latency_rate, True, 64)
        found.pop("samples_ms", None)
        rounds["experiment" if on else "none"].append(found)
    asyncio.run(switch(2 * config.latency_rounds, False))

    def median_of(key: str, which: str) -> float:
        return float(statistics.median(r["latency_ms"][key] for r in rounds[which]))

    summary: dict[str, Any] = {
        which: {
            "p50_ms": median_of("p50", which),
            "p99_ms": median_of("p99", which),
            "p50_range_ms": [
                min(r["latency_ms"]["p50"] for r in rounds[which]),
                max(r["latency_ms"]["p50"] for r in rounds[which]),
            ],
        }
        for which in rounds
    }
    summary["p50_added_ms"] = summary["experiment"]["p50_ms"] - summary["none"]["p50_ms"]
    return {"rounds": rounds, **summary}


@dataclass(frozen=True)
class World:
    """Simulated users over a catalog, and the model of their tastes, published."""

    behaviour: BehaviourModel
    version: str
    training_events: int
    trained_users: list[str]  # those with a batch vector

    @property
    def served_users(self) -> set[str]:
        return {self.behaviour.user_id(u) for u in range(self.behaviour.config.users)}


def publish_world(
    settings: Settings,
    users: int,
    items: int,
    training_visits: int,
    seed: int,
    shift_at: float | None = None,
) -> World:
    """The synthetic catalog, users who browse it by their tastes (shifting at `shift_at` of a
    run, if given), and ALS trained on their own browsing (tastes as at the start), published
    and active (with its drift baseline)."""
    from batch.train import publish_artifacts, to_artifacts, train

    catalog = synthetic_catalog(items, seed)
    tastes = BehaviourConfig(users=users, seed=seed, drift=0.0)
    dataset = browsing_dataset(
        BehaviourModel(catalog, replace(tastes, browse_views=6.0)), training_visits
    )
    trained = train(dataset, "als", {"factors": 32, "iterations": 15, "random_state": 1})
    version = publish_artifacts(settings, to_artifacts(trained, dataset.name, "als"))
    behaviour = BehaviourModel(catalog, replace(tastes, shift_at=shift_at))
    trained_users = sorted(set(dataset.interactions["user_id"]))
    return World(behaviour, version, dataset.n_interactions, trained_users)


def run(settings: Settings, config: ExperimentBenchConfig, work_dir: Path) -> dict[str, Any]:
    from core.experiment_report import build_report
    from recsys.bench.api import serving
    from recsys.bench.common import service_env
    from recsys.processes import WorkerProcess

    load_before = os.getloadavg()
    started = time.perf_counter()
    world = publish_world(settings, config.users, config.items, config.training_visits, config.seed)
    behaviour = world.behaviour
    fit_s = time.perf_counter() - started
    env = service_env(
        settings,
        RECSYS_EXPERIMENT_BUCKET_S=str(config.bucket_s),
        RECSYS_API_EXPERIMENT_REFRESH_S="0.5",
    )
    with serving(env, config.workers, work_dir) as server:
        worker = WorkerProcess(settings, work_dir, "bench-experiment", env=env).start()
        try:
            simulated, registered, counts = asyncio.run(
                _simulate(settings, behaviour, server.base_url, config)
            )
        finally:
            worker.stop()
        # The latency rounds on a quiet machine: the worker is done, and only users with a
        # batch vector are asked (each answer then takes the same personalized path).
        users = [u for u in world.trained_users if u in world.served_users]
        latency = _latency_rounds(settings, server, users, config)
    latency["assignment_us"] = assignment_cost_us(_experiment(config))
    report = build_report(registered, counts)
    control = report["control"]
    separations = {
        arm["name"]: separation(report["buckets"], arm["name"], control)
        for arm in report["arms"][1:]
    }
    # Not `asdict`: it rebuilds a Counter from (key, count) pairs, counting the pairs.
    tallies = {
        str(name): {
            "requests": tally.requests,
            "impressions": tally.impressions,
            "clicks": tally.clicks,
            "clicked_requests": tally.clicked_requests,
            "purchases": tally.purchases,
            "sources": dict(tally.sources),
            "ctr_per_item": tally.ctr,
        }
        for name, tally in simulated.tallies.items()
    }
    return {
        "benchmark": "experiment",
        "config": asdict(config),
        "model": {
            "version": world.version,
            "fit_and_publish_seconds": fit_s,
            "training_events": world.training_events,
        },
        "load_average_before": load_before,
        "simulated": {
            "requests": simulated.requests,
            "answered": simulated.answered,
            "seconds": simulated.seconds,
            "stopped_by": simulated.stopped_by,
            "errors": dict(simulated.errors),
            "browse_events": simulated.browse_events,
            "tallies": tallies,
        },
        "report": report,
        "separation": separations,
        "latency": latency,
    }


def run_with_local_services(config: ExperimentBenchConfig, use_running: bool) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    with bench_services(use_running, "recsys-bench-experiment-") as (settings, work_dir):
        return run(settings, config, work_dir)
