"""An experiment measured end to end: simulated users (`recsys.respond`) request answers from
the API and click by their hidden tastes; the API records impressions, the real stream worker
credits the clicks to the arms, and the report says the random arm loses to the model arm with
p < 0.01, within a bounded run."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from api.main import create_app
from core import experiment_store, keys
from core.clients import ensure_topics
from core.experiment_report import build_report
from core.experiments import Arm, Experiment
from core.model_version import as_bytes
from core.settings import Settings
from recsys.processes import WorkerProcess, wait_until
from recsys.respond import BehaviourModel, RunOptions, run_respond
from tests.integration.conftest import ApiSettings, Serve, typed
from tests.integration.test_simulate_respond import live_model  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

EXPERIMENT = Experiment(
    "model-vs-random",
    (Arm("model", 0.5), Arm("random", 0.5, {"random": True})),
    salt="sim",
)


async def test_the_random_arm_loses_to_the_model_arm_in_a_simulated_run(
    make_api_settings: ApiSettings,
    serve: Serve,
    live_model: BehaviourModel,  # noqa: F811
    redis: aioredis.Redis,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    await ensure_topics(service_settings)
    await experiment_store.create(redis, EXPERIMENT, time.time())
    worker = WorkerProcess(service_settings, tmp_path, f"exp-{uuid.uuid4().hex[:6]}").start()
    try:
        # Consuming before the run, as in production: a worker that starts on a backlog reads
        # the click and impression topics in no set order, and a click read before its
        # impression is not credited (`core.attribution`).
        async def ready() -> bool:
            try:
                return worker.readiness()[0] == 200
            except httpx.HTTPError:  # not listening yet
                return False

        await wait_until(ready, 60, "the worker consuming", worker)
        # 600 answers, ~300 an arm: click-through ~0.58 against ~0.37 puts p near 1e-7; at 240
        # answers the random arm's luck alone put p at 0.03 in one CI run in ten or so.
        options = RunOptions(max_requests=600, max_seconds=90, rate=100, k=8, event_batch=100)
        async with serve(create_app(make_api_settings())) as api:
            result = await run_respond(typed(api), live_model, options)
        assert not result.errors, result.errors
        assert set(result.tallies) == {"model", "random"}

        async def counted() -> bool:
            counts = await experiment_store.read_counts(redis, EXPERIMENT.id)
            shown = sum(arms.get((v, "impressions"), 0) for arms in counts.values() for v in
                        ("model", "random"))  # fmt: skip
            return shown == result.answered

        await wait_until(counted, 90, "every answer counted as an impression", worker)
        # The clicks are posted after their answers: give the last of them time to be applied.
        clicks = sum(t.clicks for t in result.tallies.values())

        async def clicks_counted() -> bool:
            counts = await experiment_store.read_counts(redis, EXPERIMENT.id)
            found = sum(
                n for arms in counts.values() for (_, o), n in arms.items() if o == "clicks"
            )
            return found >= clicks

        await wait_until(clicks_counted, 60, "every click credited", worker)

        async def drift_written() -> bool:  # the worker's apply process feeds its drift window
            fields = await redis.hkeys(keys.DRIFT_LIVE)
            return any(as_bytes(f).startswith(b"worker:") for f in fields)

        await wait_until(drift_written, 30, "the worker's drift window written", worker)
    finally:
        worker.stop()

    registered = await experiment_store.registered(redis, EXPERIMENT.id)
    assert registered is not None
    report = build_report(registered, await experiment_store.read_counts(redis, EXPERIMENT.id))
    model, random_arm = report["arms"]
    # What the stream credited is what the simulated users did with their answers, and some of
    # their browsing: a click without a recommendation id of an item an answer showed within
    # the window is that answer's too (last touch).
    for arm in (model, random_arm):
        tally, counts = result.tallies[arm["name"]], arm["counts"]
        assert counts["impressions"] == tally.requests
        assert tally.clicks <= counts["clicks"] <= tally.clicks + result.browse_events
        assert counts["clicked_impressions"] >= tally.clicked_requests
        assert counts["purchases"] >= tally.purchases
    versus = random_arm["rates"]["ctr"]["vs_control"]
    assert versus["difference"] < 0
    assert versus["p_value"] < 0.01, report
