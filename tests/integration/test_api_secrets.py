"""Secrets never reach the logs: the app run with an API key, a Redis password and a Kafka
password set, every log level on, through answers that work and answers that fail (no key, a
wrong key, an invalid body, a broker that does not speak SASL). The test Redis has no password:
redis-py sends AUTH with the one set and carries on when Redis says none is configured."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from api.main import create_app
from tests.integration.conftest import ApiSettings, Serve

pytestmark = pytest.mark.integration

API_KEY = "api-key-3f1c9b7e5d"
REDIS_PASSWORD = "redis-pass-8a2d4c6e0f"
KAFKA_PASSWORD = "kafka-pass-1b3d5f7a9c"


async def test_no_secret_in_the_logs(
    make_api_settings: ApiSettings,
    serve: Serve,
    model_version: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = make_api_settings(
        api_key=SecretStr(API_KEY),
        redis_password=SecretStr(REDIS_PASSWORD),
        kafka_username="recsys",
        kafka_password=SecretStr(KAFKA_PASSWORD),  # the test broker has no SASL listener
        api_kafka_timeout_ms=1500,
        api_redis_timeout_ms=200,
        api_request_budget_ms=1000,
        log_level="DEBUG",
    )
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "click",
        "user_id": "u1",
        "item_id": "c1",
        "ts": datetime.now(UTC).isoformat(),
    }
    caplog.set_level(logging.DEBUG)
    async with serve(create_app(settings)) as client:
        statuses = {
            "recommend": (await client.get("/recommend/u1?k=3")).status_code,
            "profile": (await client.get("/users/u1/profile")).status_code,
            "similar": (await client.get("/items/c1/similar")).status_code,
            "ready": (await client.get("/health/ready")).status_code,
            "no key": (await client.post("/events", json=event)).status_code,
            "wrong key": (
                await client.post("/events", json=event, headers={"X-API-Key": API_KEY[::-1]})
            ).status_code,
            "invalid": (
                await client.post("/events", json={"x": 1}, headers={"X-API-Key": API_KEY})
            ).status_code,
            "publish": (
                await client.post("/events", json=event, headers={"X-API-Key": API_KEY})
            ).status_code,
            "config": (await client.get("/openapi.json")).status_code,
        }
    # The failures were real: Kafka could not be reached over SASL, the key was checked.
    assert statuses == {
        "recommend": 200,
        "profile": 200,
        "similar": 200,
        "ready": 503,
        "no key": 401,
        "wrong key": 401,
        "invalid": 422,
        "publish": 503,
        "config": 200,
    }
    assert any(record.levelno >= logging.WARNING for record in caplog.records)
    logged = caplog.text + "\n".join(repr(record.__dict__) for record in caplog.records)
    out, err = capfd.readouterr()
    for secret in (API_KEY, REDIS_PASSWORD, KAFKA_PASSWORD):
        assert secret not in logged
        assert secret not in out + err
