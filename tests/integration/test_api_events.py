"""POST /events: API key, validation naming each field, body limits, publishing to the real
Kafka with the trace context in the headers, and 503 when Kafka is unreachable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr

from api.main import create_app
from core.clients import kafka_common
from core.settings import Settings
from infra.local.process import free_port
from schemas import topic_for

pytestmark = pytest.mark.integration

# The fixtures of the same names in conftest.py.
ApiSettings = Callable[..., Settings]
Serve = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]

API_KEY = "test-key"


def event(user_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "click",
        "user_id": user_id,
        "item_id": "c1",
        "ts": datetime.now(UTC).isoformat(),
        **fields,
    }


def published_total() -> float:
    return REGISTRY.get_sample_value("recsys_api_events_published_total") or 0.0


@pytest.fixture
async def keyed_api(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(make_api_settings(api_key=SecretStr(API_KEY)))) as client:
        yield client


async def test_api_key_is_required_when_configured(keyed_api: httpx.AsyncClient) -> None:
    assert (await keyed_api.post("/events", json=event())).status_code == 401
    wrong = await keyed_api.post("/events", json=event(), headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    right = await keyed_api.post("/events", json=event(), headers={"X-API-Key": API_KEY})
    assert right.status_code == 202
    assert right.json() == {"accepted": 1}
    # Reads stay open.
    assert (await keyed_api.get("/recommend/u1")).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "index"),
    [
        (event(user_id=""), "user_id", None),
        ({k: v for k, v in event().items() if k != "item_id"}, "item_id", None),
        (event(event_type="like"), "event_type", None),
        (event(event_id="not-a-uuid"), "event_id", None),
        (event(ts="yesterday"), "ts", None),
        (event(ts="2030-01-01T00:00:00"), "ts", None),  # no timezone
        (event(schema_version=2), "schema_version", None),
        (event(extra_field=1), "extra_field", None),
        (event(context={"k": ["not", "scalar"]}), "context.k", None),
        ([event(), event(), event(item_id=7)], "item_id", 2),
        ([event(), "not an event"], "body", 1),
        ([], "body", None),
        ([event()] * 1001, "body", None),
    ],
)
async def test_invalid_events_are_422_naming_the_field_and_nothing_is_published(
    api: httpx.AsyncClient, body: Any, field: str, index: int | None
) -> None:
    before = published_total()
    response = await api.post("/events", json=body)
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert problems[0]["field"] == field
    assert problems[0]["index"] == index
    assert problems[0]["reason"]
    assert published_total() == before


async def test_malformed_json_and_oversized_bodies(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/events", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"
    too_big = await api.post("/events", content=b"[" + b" " * (1024 * 1024) + b"]")
    assert too_big.status_code == 413
    assert "larger than" in too_big.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b"["
        for _ in range(64):
            yield b" " * 65536
        yield b"]"

    too_big_chunked = await api.post("/events", content=chunks())
    assert too_big_chunked.status_code == 413
    assert too_big_chunked.json() == too_big.json()


async def test_events_reach_kafka_keyed_by_user_with_the_trace_context(
    api: httpx.AsyncClient, service_settings: Settings
) -> None:
    user = f"trace-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().hex
    incoming = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    batch = [event(user), event(user, event_type="view", item_id="d2")]
    response = await api.post("/events", json=batch, headers={"traceparent": incoming})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}

    consumer = AIOKafkaConsumer(
        topic_for("click"),
        topic_for("view"),
        **kafka_common(service_settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: dict[str, Any] = {}
        for _ in range(60):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found |= {r.value: r for r in records if r.key == user.encode()}
            if len(found) == 2:
                break
    finally:
        await consumer.stop()
    assert len(found) == 2
    for record in found.values():
        headers = dict(record.headers)
        assert trace_id in headers["traceparent"].decode()  # the caller's trace continues
    assert {r.topic for r in found.values()} == {"events.click", "events.view"}


async def test_unreachable_kafka_is_503_and_named_by_readiness(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> None:
    settings = make_api_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", api_kafka_timeout_ms=1500
    )
    async with serve(create_app(settings)) as client:
        response = await client.post("/events", json=event())
        assert response.status_code == 503
        assert "Kafka" in response.json()["detail"]
        assert (await client.get("/recommend/u3")).json()["source"] == "personalized"
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"].startswith("error")
        assert ready.json()["checks"]["redis"] == "ok"
        assert (await client.get("/health/live")).status_code == 200


async def test_ready_when_every_backend_answers(api: httpx.AsyncClient) -> None:
    response = await api.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"redis": "ok", "qdrant": "ok", "kafka": "ok"},
    }
