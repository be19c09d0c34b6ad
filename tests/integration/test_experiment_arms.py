"""GET /recommend under a running experiment: each user's arm is sticky and named in the answer,
its parameters change the answer (a holdout gets the popular list), an arm can be forced by
hand, and an unknown one is a 422 naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.main import create_app
from core import experiment_store
from core.experiments import assign, experiment_from_json
from tests.integration.conftest import ApiSettings, Serve

pytestmark = pytest.mark.integration

EXPERIMENT = json.dumps(
    {
        "id": "homepage",
        "salt": "t1",
        "arms": [
            {"name": "control", "share": 0.5},
            {"name": "diverse", "share": 0.3, "params": {"diversity": 0.0}},
            {"name": "holdout", "share": 0.2, "params": {"holdout": True}},
        ],
    }
)


def item_ids(body: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in body["items"]]


async def test_each_user_gets_their_arm_and_its_answer(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> None:
    experiment = experiment_from_json(EXPERIMENT)
    async with serve(create_app(make_api_settings(experiment=EXPERIMENT))) as api:
        seen = set()
        for n in range(60):
            user = f"u{n}"
            first = (await api.get(f"/recommend/{user}", params={"k": 5})).json()
            again = (await api.get(f"/recommend/{user}", params={"k": 5})).json()
            arm = assign(experiment, user).name
            assert (first["experiment"], first["variant"], again["variant"]) == (
                "homepage", arm, arm,
            )  # fmt: skip
            assert (first["source"] == "popular") is (arm == "holdout")
            seen.add(arm)
        assert seen == {"control", "diverse", "holdout"}

        forced = {
            arm: (await api.get("/recommend/u3", params={"k": 10, "variant": arm})).json()
            for arm in ("control", "diverse", "holdout")
        }
        assert {arm: body["variant"] for arm, body in forced.items()} == {
            "control": "control", "diverse": "diverse", "holdout": "holdout",
        }  # fmt: skip
        assert item_ids(forced["control"]) != item_ids(forced["diverse"])  # MMR at 0.0 vs 0.8
        assert forced["holdout"]["source"] == "popular"

        wrong = await api.get("/recommend/u3", params={"variant": "treatment"})
        assert wrong.status_code == 422
        (problem,) = wrong.json()["detail"]
        assert problem["field"] == "variant"
        assert "control, diverse, holdout" in problem["reason"]


async def test_without_an_experiment_answers_name_none_and_a_variant_is_refused(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> None:
    async with serve(create_app(make_api_settings())) as api:
        body = (await api.get("/recommend/u3", params={"k": 3})).json()
        assert "variant" not in body
        assert "experiment" not in body
        refused = await api.get("/recommend/u3", params={"variant": "control"})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["field"] == "variant"


async def test_the_contract_lists_the_running_arms_or_no_variant(
    make_api_settings: ApiSettings, serve: Serve, model_version: str, redis: aioredis.Redis
) -> None:
    def variant_schema(document: dict[str, Any]) -> Any:
        parameters = document["paths"]["/recommend/{user_id}"]["get"]["parameters"]
        found = [p["schema"] for p in parameters if p["name"] == "variant"]
        return found[0] if found else None

    async with serve(create_app(make_api_settings(experiment=EXPERIMENT))) as api:
        running = (await api.get("/openapi.json")).json()
    # The configured experiment was registered, and runs until it is stopped.
    await experiment_store.stop(redis, "homepage", time.time())
    async with serve(create_app(make_api_settings())) as api:
        idle = (await api.get("/openapi.json")).json()
    assert variant_schema(running) == {"type": "string", "enum": ["control", "diverse", "holdout"]}
    assert variant_schema(idle) is None
