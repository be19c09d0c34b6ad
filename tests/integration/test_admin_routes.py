"""The operator routes the console reads (`api.routes.admin`), over the session's real Redis and
Kafka and a published model: model versions and switching between them behind the API key, the
stream's status from what the workers (here the real applier, in-process) and Kafka hold, and
one item's detail."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic import SecretStr

from api.main import create_app
from batch.publish import ModelArtifacts
from core.clients import ensure_topics, kafka_common, kafka_producer
from core.model_version import active_version, set_mlflow_run
from core.settings import Settings
from schemas import encode_event, event_key, new_event, topic_for
from schemas.dead_letter import DeadLetter
from schemas.topics import DLQ_TOPIC
from streams.applier import BatchApplier, SourcedEvent, UpdateConfig
from streams.model_cache import ModelCache
from tests.integration.conftest import ApiSettings, Published, publish_model, serving

pytestmark = pytest.mark.integration

KEY = "admin-key-0123456789"


@pytest.fixture
async def admin(
    make_api_settings: ApiSettings, published: Published
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(make_api_settings(api_key=SecretStr(KEY)))) as client:
        yield client


async def test_versions_are_listed_and_switched_behind_the_key(
    admin: httpx.AsyncClient,
    redis: aioredis.Redis,
    published: Published,
    taste_model: ModelArtifacts,
    tmp_path: Path,
) -> None:
    first = published.version
    second = (await publish_model(taste_model, redis, tmp_path)).version
    listed = (await admin.get("/admin/models")).json()
    assert listed["active"] == second
    assert [v["version"] for v in listed["versions"]] == [second, first]
    newest = listed["versions"][0]
    assert newest["active"]
    assert (newest["model"], newest["dataset"]) == ("als", "tastes")
    assert (newest["users"], newest["items"], newest["dim"]) == (60, 60, 8)
    assert listed["decisions"] == []

    assert (await admin.post("/admin/models/rollback")).status_code == 401
    wrong = {"X-API-Key": "nope"}
    assert (await admin.post(f"/admin/models/{first}/activate", headers=wrong)).status_code == 401
    assert await active_version(redis) == second

    key = {"X-API-Key": KEY}
    back = await admin.post("/admin/models/rollback", headers=key)
    assert back.status_code == 200
    assert back.json() == {"previous": second, "active": first}
    assert await active_version(redis) == first
    # Nothing before the first version: a conflict, and nothing switched.
    again = await admin.post("/admin/models/rollback", headers=key)
    assert again.status_code == 409
    assert "no kept version" in again.json()["detail"]
    forward = await admin.post(f"/admin/models/{second}/activate", headers=key)
    assert forward.json() == {"previous": first, "active": second}
    assert await active_version(redis) == second
    unknown = await admin.post("/admin/models/20200101T000000-als-beef/activate", headers=key)
    assert unknown.status_code == 404
    assert await active_version(redis) == second


async def test_a_version_links_its_mlflow_run_on_a_tracking_server(
    make_api_settings: ApiSettings, redis: aioredis.Redis, published: Published
) -> None:
    await set_mlflow_run(redis, published.version, "0123abcd")
    server = make_api_settings(mlflow_tracking_uri="http://mlflow.internal:5000/")
    async with serving(create_app(server)) as client:
        (linked,) = (await client.get("/admin/models")).json()["versions"]
    assert linked["mlflow_run_id"] == "0123abcd"
    assert linked["mlflow_run_url"] == "http://mlflow.internal:5000/#/runs/0123abcd"
    local = make_api_settings(mlflow_tracking_uri="sqlite:///tmp/mlflow.db")
    async with serving(create_app(local)) as client:
        (unlinked,) = (await client.get("/admin/models")).json()["versions"]
    assert unlinked["mlflow_run_id"] == "0123abcd"
    assert unlinked["mlflow_run_url"] is None  # a local store has no page


async def test_stream_status_follows_kafka_and_what_the_workers_applied(
    admin: httpx.AsyncClient, redis: aioredis.Redis, service_settings: Settings
) -> None:
    await ensure_topics(service_settings)
    before = (await admin.get("/admin/stream", params={"dead_letters": 50})).json()
    assert before["unavailable"] == []
    user = f"admin-{uuid.uuid4().hex[:8]}"
    events = [
        new_event("view", user, "c1"),
        new_event("click", user, "c1"),
        new_event("purchase", user, "c2"),
        new_event("dislike", user, "d3"),
    ]
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    # Letters of a topic this test publishes nothing to: the freshness counts a dead-lettered
    # offset as dealt with, and one of events.view's would hide the view below from the backlog
    # whenever the user's key lands in its partition.
    letters = [
        DeadLetter.for_message(b"{}", f"{marker} {n}", "ts", "events.hide", 0, n) for n in range(3)
    ]
    producer = kafka_producer(service_settings)
    await producer.start()
    try:
        sent = [
            (event, await producer.send_and_wait(
                topic_for(event.event_type), encode_event(event), key=event_key(event)))
            for event in events
        ]  # fmt: skip
        for letter in letters:
            await producer.send_and_wait(DLQ_TOPIC, letter.model_dump_json().encode())
    finally:
        await producer.stop()

    published = (await admin.get("/admin/stream", params={"dead_letters": 50})).json()
    backlog = published["freshness"]["backlog"]
    assert backlog == before["freshness"]["backlog"] + len(events)
    assert published["freshness"]["oldest_pending_s"] > 0
    dead = published["dead_letters"]
    assert dead["count"] == before["dead_letters"]["count"] + 3
    newest = [d["error"] for d in dead["newest"] if d["error"].startswith(marker)]
    assert newest == [f"{marker} 2", f"{marker} 1", f"{marker} 0"]  # newest first

    # The real applier writes the events at their Kafka offsets, as a worker would.
    applier = BatchApplier(redis, UpdateConfig.from_settings(service_settings))
    batch = [SourcedEvent(e, m.topic, m.partition, m.offset) for e, m in sent]
    await applier.apply(batch, await ModelCache(redis).get())
    applied = (await admin.get("/admin/stream")).json()
    # Everything up to these offsets counts as applied in their partitions.
    assert applied["freshness"]["backlog"] <= backlog - len(events)
    rates = applied["rates"]
    assert {t: rates["counts"][t] for t in ("view", "click", "purchase", "dislike")} == {
        "view": 1,
        "click": 1,
        "purchase": 1,
        "dislike": 1,
    }
    assert rates["per_s"]["click"] > 0
    assert 300 <= rates["window_s"] <= 600


async def test_archive_lag_appears_once_the_archivers_group_commits(
    make_api_settings: ApiSettings, published: Published, service_settings: Settings
) -> None:
    group = f"archive-{uuid.uuid4().hex[:8]}"
    async with serving(create_app(make_api_settings(archive_group_id=group))) as api:
        assert (await api.get("/admin/stream")).json()["archive"] is None
        consumer = AIOKafkaConsumer(
            **kafka_common(service_settings), group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            view = TopicPartition(topic_for("view"), 0)
            end = (await consumer.end_offsets([view]))[view]
            consumer.assign([view])
            await consumer.commit({view: OffsetAndMetadata(max(end - 1, 0), "")})
        finally:
            await consumer.stop()
        archive = (await api.get("/admin/stream")).json()["archive"]
    assert archive == {"group": group, "lag": min(end, 1), "partitions": 1}


async def test_item_detail_has_payload_trending_and_windows(
    admin: httpx.AsyncClient, redis: aioredis.Redis, service_settings: Settings, model_version: str
) -> None:
    applier = BatchApplier(redis, UpdateConfig.from_settings(service_settings))
    events = [new_event("click", f"iu{n}", "c7") for n in range(3)]
    batch = [SourcedEvent(e, topic_for("click"), 0, 1_000_000 + n) for n, e in enumerate(events)]
    await applier.apply(batch, await ModelCache(redis).get())
    detail = (await admin.get("/admin/items/c7")).json()
    assert detail["in_model"]
    assert detail["model_version"] == model_version
    assert detail["payload"]["title"] == "Comedy 7"
    assert detail["trending_rank"] == 1
    assert detail["trending_score"] > 0
    assert detail["windows"]["5m"]["counts"] == {"click": 3}
    assert detail["windows"]["1h"]["counts"] == {"click": 3}
    unknown = (await admin.get("/admin/items/nowhere")).json()
    assert not unknown["in_model"]
    assert unknown["payload"] == {}
    assert unknown["trending_rank"] is None
    assert unknown["trending_score"] == 0
