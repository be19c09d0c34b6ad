"""`recsys retrain` against real Redis, an embedded Qdrant shard and a Delta archive: the gate
publishes the first candidate, refuses one trained on shuffled interactions (the active version
stays), publishes one as good as the active version, and records every decision; and
`recsys models rollback` brings back the previous version's answers through the API."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import redis.asyncio as aioredis
from deltalake import write_deltalake

import batch.retrain.run
from api.main import create_app
from batch.data import Dataset
from batch.datasets import SyntheticConfig, generate_synthetic
from batch.retrain.run import RetrainOptions, retrain_once
from batch.train import to_artifacts, train, train_on
from core.archive import ARCHIVE_SCHEMA, PARTITION_COLUMNS, event_date
from core.model_version import active_version, listed_versions, recorded_decisions
from core.settings import Settings
from recsys.processes import RetrainerProcess
from tests.integration.conftest import ApiSettings, publish_model, serving, taste_dataset
from tests.integration.test_models_command import models

pytestmark = pytest.mark.integration

# Small and quick: a candidate fits in well under a second.
OPTIONS = RetrainOptions(
    window_days=120,
    holdout_fraction=0.1,
    margin=0.005,
    min_interactions=500,
    params={"factors": 16, "iterations": 8, "random_state": 0},
)


def write_archive(rows: pa.Table, uri: Path) -> None:
    """Training rows (user_id, item_id, ts, event_type, topic, partition, offset) as the
    archivers write them (the other columns null)."""
    n = rows.num_rows
    ts = rows.column("ts").to_pylist()
    columns: dict[str, Any] = {name: pa.nulls(n, field.type) for name, field in
                               zip(ARCHIVE_SCHEMA.names, ARCHIVE_SCHEMA, strict=True)}  # fmt: skip
    for name in rows.column_names:
        columns[name] = rows.column(name)
    columns["event_id"] = pa.array([f"e{k}" for k in range(n)])
    columns["event_date"] = pa.array([event_date(t) for t in ts])
    now = datetime.now(UTC).replace(microsecond=0)
    columns["published_at"] = columns["archived_at"] = pa.array(
        [now] * n, pa.timestamp("ms", "UTC")
    )
    table = pa.table([columns[name] for name in ARCHIVE_SCHEMA.names], schema=ARCHIVE_SCHEMA)
    write_deltalake(str(uri), table, partition_by=list(PARTITION_COLUMNS), mode="overwrite")


def synthetic_rows() -> tuple[pa.Table, datetime]:
    """A synthetic event log (taste clusters) as archive rows, and a `now` just after it."""
    data = generate_synthetic(SyntheticConfig(n_users=300, n_items=120, n_events=10_000, seed=3))
    frame = data.interactions.sort_values("ts", kind="stable").reset_index(drop=True)
    ts = pd.to_datetime(frame["ts"], unit="s", utc=True)
    rows = pa.table(
        {
            "user_id": pa.array(frame["user_id"]),
            "item_id": pa.array(frame["item_id"]),
            "ts": pa.array(ts, pa.timestamp("us", "UTC")),
            "event_type": pa.array(frame["event_type"]),
            "topic": pa.array("events." + frame["event_type"]),
            "partition": pa.array(np.zeros(len(frame), np.int32)),
            "offset": pa.array(np.arange(len(frame), dtype=np.int64)),
        }
    )
    return rows, ts.max().to_pydatetime() + timedelta(seconds=1)


def shuffle_items(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Item ids permuted across rows: users, times and item popularity stay, tastes go."""
    items = np.random.default_rng(seed).permutation(rows["item_id"].to_numpy())
    return rows.assign(item_id=items)


@pytest.fixture
def settings(service_settings: Settings, tmp_path: Path) -> Settings:
    return service_settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "qdrant_path": tmp_path / "qdrant",
            "archive_uri": str(tmp_path / "events"),
        }
    )


async def test_the_gate_refuses_a_candidate_trained_on_shuffled_interactions(
    redis: aioredis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, now = synthetic_rows()
    write_archive(rows, Path(settings.archive_location))

    first = await asyncio.to_thread(retrain_once, settings, OPTIONS, now)
    assert first["decision"] == "published", first
    assert first["active"] is None
    assert await active_version(redis) == first["candidate"]
    cut = first["rows"]["train"]
    assert first["rows"]["held_out"] == first["rows"]["window"] - cut > 0

    # A candidate trained on the same rows with their item ids shuffled, scored on the same
    # held-out events.
    def train_shuffled(dataset: Dataset, rows: pd.DataFrame, *args: Any) -> Any:
        return train_on(dataset, shuffle_items(rows), *args)

    with monkeypatch.context() as patch:
        patch.setattr(batch.retrain.run, "train_on", train_shuffled)
        refused = await asyncio.to_thread(retrain_once, settings, OPTIONS, now)
    assert refused["decision"] == "refused", refused
    assert refused["rows"] == first["rows"]
    assert refused["evaluated_users"] == first["evaluated_users"]
    assert refused["active"] == first["candidate"]
    # The active version scored from what it published scores as it did as the candidate.
    assert refused["active_ndcg"] == pytest.approx(first["candidate_ndcg"], abs=1e-5)
    assert refused["candidate_ndcg"] < refused["active_ndcg"] - OPTIONS.margin
    assert await active_version(redis) == first["candidate"]  # the active version stays
    assert refused["candidate"] not in dict(await listed_versions(redis))

    # Trained on the real interactions, a candidate as good as the active one is published.
    accepted = await asyncio.to_thread(retrain_once, settings, OPTIONS, now)
    assert accepted["decision"] == "published", accepted
    assert accepted["candidate_ndcg"] >= accepted["active_ndcg"] - OPTIONS.margin
    assert await active_version(redis) == accepted["candidate"]

    recorded = await recorded_decisions(redis)
    assert [d["decision"] for d in recorded] == ["published", "refused", "published"]
    for decision in recorded:
        assert {"time", "window", "rows", "margin", "reason", "active_ndcg", "candidate_hr"} <= (
            decision.keys()
        )
    code, printed = await models(settings, "decisions")
    assert code == 0, printed
    assert "REFUSED" in printed
    code, printed = await models(settings, "show", first["candidate"])
    assert code == 0, printed
    assert "gate decision" in printed
    assert "no active version" in printed
    assert "archive[" in printed  # the dataset: an archive window


async def test_too_little_new_data_is_skipped_and_recorded(
    redis: aioredis.Redis, settings: Settings
) -> None:
    rows, now = synthetic_rows()
    write_archive(rows.slice(0, 300), Path(settings.archive_location))
    skipped = await asyncio.to_thread(retrain_once, settings, OPTIONS, now)
    assert skipped["decision"] == "skipped"
    assert "RECSYS_RETRAIN_MIN_INTERACTIONS" in skipped["reason"]
    assert await active_version(redis) is None
    assert (await recorded_decisions(redis))[0]["decision"] == "skipped"


def swapped_tastes(dataset: Dataset) -> Dataset:
    """The taste data with Comedy and Drama items swapped: every answer changes."""
    swap = {"c": "d", "d": "c", "a": "a"}
    interactions = dataset.interactions.assign(
        item_id=[swap[i[0]] + i[1:] for i in dataset.interactions["item_id"]]
    )
    return Dataset("swapped", interactions, dataset.items)


async def answers(api: Any, users: list[str], version: str) -> dict[str, list[str]]:
    """Each user's answer once the API serves `version` (it loads a new one in the background)."""
    for _ in range(100):
        found = {}
        for user in users:
            body = (await api.get(f"/recommend/{user}", params={"k": 5})).json()
            if body["model_version"] != version or body["source"] != "personalized":
                break
            found[user] = [item["item_id"] for item in body["items"]]
        else:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"the API did not answer from {version}")


async def test_rollback_restores_the_previous_versions_answers(
    redis: aioredis.Redis,
    make_api_settings: ApiSettings,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    params = {"factors": 8, "iterations": 15, "random_state": 1}
    first_data, second_data = taste_dataset(), swapped_tastes(taste_dataset())
    first = await publish_model(
        to_artifacts(train(first_data, "als", params), first_data.name, "als"), redis, tmp_path
    )
    users = ["u3", "u12", "u40", "u55"]
    async with serving(create_app(make_api_settings())) as api:
        before = await answers(api, users, first.version)
        second = await publish_model(
            to_artifacts(train(second_data, "als", params), second_data.name, "als"),
            redis,
            tmp_path,
        )
        changed = await answers(api, users, second.version)
        assert all(changed[user] != before[user] for user in users)

        code, printed = await models(service_settings, "rollback")
        assert code == 0, printed
        assert first.version in printed
        assert await active_version(redis) == first.version
        assert await answers(api, users, first.version) == before

        code, printed = await models(service_settings, "rollback")  # nothing older is kept
        assert code == 1
        assert "no kept version was published before the active one" in printed
        assert await active_version(redis) == first.version


async def test_the_loop_serves_metrics_survives_a_failed_run_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    """No archive yet: the run fails, is counted, and the loop waits for the next one; SIGTERM
    ends it promptly and cleanly."""
    loop = RetrainerProcess(settings, tmp_path, every="1h").start()
    try:
        failed = 'recsys_retrain_runs_total{decision="failed"} 1.0'
        for _ in range(200):
            assert loop.alive, loop.log_tail()
            try:
                if failed in loop.metrics():
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no failed run counted\n{loop.log_tail()}")
        assert 'recsys_retrain_last_decision{decision="failed"} 1.0' in loop.metrics()
        assert "recsys archive run" in loop.log_tail()
        assert loop.proc is not None
        loop.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(loop.proc.wait, 10) == 0
    finally:
        loop.stop()
