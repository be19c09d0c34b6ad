"""Experiments managed while the API serves: one created in the registry (as `recsys experiments
create` does) reaches the answers and the contract, stopping it ends it; a random arm serves
random unseen items; the report route and the CLI report read the stream's counters."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from api.main import create_app
from core import experiment_store, keys
from core.experiment_report import build_report
from core.experiments import Arm, Experiment
from core.settings import Settings
from tests.integration.conftest import ApiSettings, Serve

pytestmark = pytest.mark.integration

EXPERIMENT = Experiment("home", (Arm("model", 0.5), Arm("random", 0.5, {"random": True})), salt="s")


async def wait_for_variant(api: httpx.AsyncClient, present: bool) -> dict[str, Any]:
    """The first answer that carries a variant (or none), within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = (await api.get("/recommend/u1", params={"k": 5})).json()
        if ("variant" in body) is present or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


def variant_enum(document: dict[str, Any]) -> list[str] | None:
    parameters = document["paths"]["/recommend/{user_id}"]["get"]["parameters"]
    found = [p["schema"].get("enum") for p in parameters if p["name"] == "variant"]
    return found[0] if found else None


async def test_an_experiment_created_while_serving_runs_until_stopped(
    make_api_settings: ApiSettings, serve: Serve, model_version: str, redis: aioredis.Redis
) -> None:
    settings = make_api_settings(api_experiment_refresh_s=0.1)
    async with serve(create_app(settings)) as api:
        assert "variant" not in (await api.get("/recommend/u1")).json()
        assert variant_enum((await api.get("/openapi.json")).json()) is None
        await experiment_store.create(redis, EXPERIMENT, time.time())
        body = await wait_for_variant(api, present=True)
        assert body["experiment"] == "home"
        assert body["variant"] in ("model", "random")
        assert variant_enum((await api.get("/openapi.json")).json()) == ["model", "random"]
        listed = (await api.get("/experiments")).json()
        assert [(e["id"], e["running"]) for e in listed] == [("home", True)]

        await experiment_store.stop(redis, "home", time.time())
        body = await wait_for_variant(api, present=False)
        assert "experiment" not in body
        assert variant_enum((await api.get("/openapi.json")).json()) is None


async def test_a_random_arm_serves_random_items_the_user_has_not_seen(
    make_api_settings: ApiSettings, serve: Serve, model_version: str, redis: aioredis.Redis
) -> None:
    await experiment_store.create(redis, EXPERIMENT, time.time())
    async with serve(create_app(make_api_settings())) as api:
        answers = [
            (await api.get("/recommend/u1", params={"k": 10, "variant": "random"})).json()
            for _ in range(3)
        ]
        model = (await api.get("/recommend/u1", params={"k": 10, "variant": "model"})).json()
        drama = (
            await api.get("/recommend/u1", params={"k": 5, "variant": "random", "genres": "Drama"})
        ).json()
    for body in answers:
        assert (body["source"], body["variant"]) == ("random", "random")
        ids = [item["item_id"] for item in body["items"]]
        assert len(ids) == len(set(ids)) == 10
        assert {item["source"] for item in body["items"]} == {"random"}
    assert len({tuple(i["item_id"] for i in body["items"]) for body in answers}) > 1
    assert model["source"] != "random"
    assert all("Drama" in item["genres"] for item in drama["items"])


async def test_the_report_route_and_the_cli_read_the_counters(
    make_api_settings: ApiSettings,
    serve: Serve,
    model_version: str,
    redis: aioredis.Redis,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    await experiment_store.create(redis, EXPERIMENT, 1_700_000_000.0)
    # What the worker counts, spread over two shards and two buckets.
    written: dict[tuple[int, int], dict[str, int]] = {
        (0, 1_700_000_000): {"model:users": 900, "model:impressions": 1000,
                             "model:clicked_impressions": 120, "random:users": 880,
                             "random:impressions": 980, "random:clicked_impressions": 40},
        (5, 1_700_003_600): {"model:impressions": 500, "model:clicked_impressions": 70,
                             "random:impressions": 520, "random:clicked_impressions": 20},
    }  # fmt: skip
    for (shard, bucket), counts in written.items():
        for field, count in counts.items():
            await redis.hincrby(keys.experiment_counts(shard, "home", bucket), field, count)

    async with serve(create_app(make_api_settings())) as api:
        report = (await api.get("/experiments/home")).json()
        missing = await api.get("/experiments/nothing")
        invalid = await api.get("/experiments/not%20an%20id")
    assert missing.status_code == 404
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["field"] == "experiment_id"
    registered = await experiment_store.registered(redis, "home")
    assert registered is not None
    expected = build_report(registered, await experiment_store.read_counts(redis, "home"))
    assert report == expected
    model, random_arm = report["arms"]
    assert model["counts"]["impressions"] == 1500
    assert model["rates"]["ctr"]["value"] == pytest.approx(190 / 1500)
    versus = random_arm["rates"]["ctr"]["vs_control"]
    assert versus["difference"] == pytest.approx(60 / 1500 - 190 / 1500)
    assert versus["p_value"] < 1e-10
    assert [b["start_s"] for b in report["buckets"]] == [1_700_000_000, 1_700_003_600]
    assert report["sample_ratio_mismatch"] is False

    plot = tmp_path / "home.png"
    env = {**os.environ, "RECSYS_REDIS_URL": service_settings.redis_url, "COLUMNS": "200"}
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", "experiments", "report", "home", "--plot", str(plot),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), timeout=60)
    assert command.returncode == 0, printed.decode()
    text = printed.decode()
    assert "0.1267" in text  # the model arm's CTR, 190 / 1500
    assert "no mismatch" in text
    assert plot.stat().st_size > 10_000


async def recsys_experiments(settings: Settings, *args: str) -> tuple[int, str]:
    env = {**os.environ, "RECSYS_REDIS_URL": settings.redis_url, "COLUMNS": "200"}
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", "experiments", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), timeout=60)
    assert command.returncode is not None
    return command.returncode, printed.decode()


async def test_the_cli_creates_lists_and_stops_and_says_what_it_refuses(
    redis: aioredis.Redis, service_settings: Settings, tmp_path: Path
) -> None:
    definition = tmp_path / "home.json"
    definition.write_text(
        '{"id": "home", "arms": [{"name": "model", "share": 0.5}, '
        '{"name": "random", "share": 0.5, "params": {"random": true}}]}'
    )
    code, printed = await recsys_experiments(service_settings, "create", str(definition))
    assert code == 0, printed
    assert "home is running: model 50%, random 50%" in printed
    assert await experiment_store.running(redis) is not None
    code, printed = await recsys_experiments(
        service_settings, "create", '{"id": "other", "arms": [{"name": "a", "share": 1}]}'
    )
    assert code == 1
    assert "experiments stop home" in printed
    code, printed = await recsys_experiments(service_settings, "create", '{"id": "x"}')
    assert code == 1
    assert "is JSON like" in printed
    code, printed = await recsys_experiments(service_settings, "list")
    assert code == 0
    assert "home" in printed
    assert "running" in printed
    code, printed = await recsys_experiments(service_settings, "stop", "home")
    assert code == 0, printed
    assert await experiment_store.running(redis) is None
    code, printed = await recsys_experiments(service_settings, "stop", "home")
    assert code == 1
    assert "not running" in printed
