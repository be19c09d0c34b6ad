"""`recsys bench drift`: how soon drift monitoring sees the users' tastes change.

On throwaway local Kafka and Redis: the experiment benchmark's world (`recsys.bench.experiment`:
a synthetic catalog, simulated users, ALS trained on their own browsing), one stream worker and
the API. A warm-up run of the responding simulator produces the system's own traffic (browsing,
and clicks and purchases of what it was shown), and the version under watch is trained on that
traffic, as a deployment retrains on its own: its drift baseline then describes what it will
see. The measured run follows for a bounded time and, at `shift_at` of it, replaces every taste
cluster's genres (`BehaviourConfig.shift_at`).
`GET /monitoring/drift` is sampled throughout: the PSI of each distribution over time, its level
before the shift (what the alert must not fire on) and the time from the shift to the first
sample above the threshold (the alert's condition; Prometheus's `for:` adds its own wait).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd

from batch.data import Dataset
from core.rules import EVENT_WEIGHTS
from core.settings import Settings
from recsys.bench.experiment import catalog_items
from recsys.respond import BehaviourModel


@dataclass(frozen=True)
class DriftBenchConfig:
    users: int = 1500
    items: int = 500
    training_visits: int = 30_000
    seconds: float = 420.0
    warmup_seconds: float = 180.0
    shift_at: float = 0.6
    rate: float = 30.0
    k: int = 10
    # The live window: short, so that a bounded run can see it fill and turn over.
    window_s: float = 60.0
    buckets: int = 6
    # The score distributions' live reference is the window after this settling time
    # (RECSYS_DRIFT_SETTLE_S): captured about `settle_s + window_s` into the run.
    settle_s: float = 60.0
    publish_interval_s: float = 2.0
    min_observations: int = 200
    sample_every_s: float = 2.0
    workers: int = 2
    seed: int = 0


def detection(samples: list[dict[str, Any]], shift_s: float, threshold: float) -> dict[str, Any]:
    """From the samples (seconds since the start, PSI per distribution): the highest PSI of each
    distribution before the shift, the first sample after it above the threshold, and when
    each live-referenced distribution was first compared with its reference."""
    before: dict[str, float] = {}
    first_after: dict[str, float] = {}
    referenced: dict[str, float] = {}
    for sample in samples:
        for name, against in sample.get("compared_with", {}).items():
            if against == "live_reference" and name not in referenced:
                referenced[name] = sample["t_s"]
        for name, psi in sample["psi"].items():
            if psi is None:
                continue
            if sample["t_s"] < shift_s:
                before[name] = max(before.get(name, 0.0), psi)
            elif psi > threshold and name not in first_after:
                first_after[name] = sample["t_s"] - shift_s
    false_alarms = sorted(name for name, psi in before.items() if psi > threshold)
    return {
        "max_psi_before_shift": before,
        "seconds_to_threshold": first_after,
        "first_detection_s": min(first_after.values()) if first_after else None,
        "above_threshold_before_shift": false_alarms,
        "reference_from_s": referenced,
    }


async def _sample(
    base_url: str, started: float, every_s: float, samples: list[dict[str, Any]]
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            try:
                report = (await client.get("/monitoring/drift")).json()
                samples.append(
                    {
                        "t_s": time.monotonic() - started,
                        "status": report["status"],
                        "psi": {d["distribution"]: d["psi"] for d in report["distributions"]},
                        "compared_with": {
                            d["distribution"]: d["compared_with"] for d in report["distributions"]
                        },
                        "observations": {
                            d["distribution"]: d["live_observations"]
                            for d in report["distributions"]
                        },
                    }
                )
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # a missed sample is a gap in the curve, not a failed run
            await asyncio.sleep(every_s)


async def _simulate(
    model: BehaviourModel, base_url: str, config: DriftBenchConfig
) -> tuple[Any, list[dict[str, Any]]]:
    from recsys.respond import RunOptions, api_client, run_respond

    options = RunOptions(
        max_requests=int(config.rate * config.seconds) + 1, max_seconds=config.seconds,
        rate=config.rate, k=config.k, event_batch=200,
    )  # fmt: skip
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    sampler = asyncio.create_task(
        _sample(base_url, started, config.sample_every_s, samples), name="drift-sampler"
    )
    try:
        async with api_client(base_url, None, options.timeout_s) as client:
            result = await run_respond(client, model, options)
    finally:
        sampler.cancel()
    return result, samples


async def _warm_up(model: BehaviourModel, base_url: str, config: DriftBenchConfig) -> Dataset:
    """The events a warm-up run posted (the users' browsing and their answers' clicks and
    purchases), as a training set over the model's catalog."""
    from recsys.respond import RunOptions, api_client, run_respond

    posted: list[dict[str, Any]] = []

    async def keep(request: httpx.Request) -> None:
        if request.url.path == "/events":
            posted.extend(orjson.loads(request.content))

    options = RunOptions(
        max_requests=int(config.rate * config.warmup_seconds) + 1,
        max_seconds=config.warmup_seconds, rate=config.rate, k=config.k, event_batch=200,
    )  # fmt: skip
    async with api_client(base_url, None, options.timeout_s) as client:
        client.http.event_hooks = {"request": [keep]}
        await run_respond(client, model, options)
    interactions = pd.DataFrame(
        {
            "user_id": [e["user_id"] for e in posted],
            "item_id": [e["item_id"] for e in posted],
            "ts": pd.to_datetime([e["ts"] for e in posted], utc=True, format="ISO8601").astype(
                "int64"
            )
            // 10**9,
            "event_type": [e["event_type"] for e in posted],
        }
    )
    interactions["weight"] = interactions["event_type"].map(EVENT_WEIGHTS).astype(np.float32)
    items = catalog_items(model.catalog)
    return Dataset(name="simulated-traffic", interactions=interactions, items=items)


def run(settings: Settings, config: DriftBenchConfig, work_dir: Path) -> dict[str, Any]:
    from batch.train import publish_artifacts, to_artifacts, train
    from recsys.bench.api import serving
    from recsys.bench.common import service_env
    from recsys.bench.experiment import publish_world
    from recsys.processes import WorkerProcess

    load_before = os.getloadavg()
    world = publish_world(
        settings, config.users, config.items, config.training_visits, config.seed,
        shift_at=config.shift_at,
    )  # fmt: skip
    env = service_env(
        settings,
        RECSYS_DRIFT_WINDOW_S=str(config.window_s),
        RECSYS_DRIFT_BUCKETS=str(config.buckets),
        RECSYS_DRIFT_PUBLISH_INTERVAL_S=str(config.publish_interval_s),
        RECSYS_DRIFT_MIN_OBSERVATIONS=str(config.min_observations),
        RECSYS_DRIFT_SETTLE_S=str(config.settle_s),
    )
    worker = WorkerProcess(settings, work_dir, "bench-drift", env=env).start()
    try:
        with serving(env, config.workers, work_dir) as server:
            steady = BehaviourModel(
                world.behaviour.catalog, replace(world.behaviour.config, shift_at=None)
            )
            traffic = asyncio.run(_warm_up(steady, server.base_url, config))
            trained = train(traffic, "als", {"factors": 32, "iterations": 15, "random_state": 1})
            version = publish_artifacts(settings, to_artifacts(trained, traffic.name, "als"))
            time.sleep(3)  # the API processes and the worker follow the new version
            simulated, samples = asyncio.run(_simulate(world.behaviour, server.base_url, config))
    finally:
        worker.stop()
    # The shift happens at `shift_at` of the run by whichever bound is nearer
    # (`recsys.respond.run_progress`): at the offered rate both agree, and the sampler's clock
    # starts with the run.
    shift_s = config.shift_at * config.seconds
    return {
        "benchmark": "drift",
        "config": asdict(config),
        "model": {
            "version": version,
            "training_events": traffic.n_interactions,
            "first_version": world.version,
        },
        "load_average_before": load_before,
        "threshold": settings.drift_psi_threshold,
        "simulated": {
            "requests": simulated.requests,
            "answered": simulated.answered,
            "seconds": simulated.seconds,
            "errors": dict(simulated.errors),
        },
        "shift_s": shift_s,
        "samples": samples,
        "detection": detection(samples, shift_s, settings.drift_psi_threshold),
    }


def run_with_local_services(config: DriftBenchConfig, use_running: bool) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    with bench_services(use_running, "recsys-bench-drift-") as (settings, work_dir):
        return run(settings, config, work_dir)
