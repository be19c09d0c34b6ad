"""Impressions of GET /recommend: recorded on their topic with the answer's id when Kafka is up;
when it is down the answers are neither slower nor errors, and every lost impression is
counted."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

from api.main import create_app
from core.clients import kafka_common
from core.settings import Settings
from infra.local.process import free_port
from schemas.impressions import decode_impression
from schemas.topics import IMPRESSION_TOPIC
from tests.integration.conftest import ApiSettings, Serve

pytestmark = pytest.mark.integration

DROP_REASONS = ("queue_full", "kafka_unavailable", "error", "shutdown")


def dropped() -> dict[str, float]:
    return {
        reason: REGISTRY.get_sample_value(
            "recsys_api_impressions_dropped_total", {"reason": reason}
        )
        or 0.0
        for reason in DROP_REASONS
    }


async def test_each_answer_is_recorded_with_its_id_items_and_positions(
    make_api_settings: ApiSettings, serve: Serve, service_settings: Settings, model_version: str
) -> None:
    user = f"imp-{uuid.uuid4().hex[:8]}"
    async with serve(create_app(make_api_settings())) as api:
        answers = [
            (await api.get(f"/recommend/{user}", params={"k": k, "genres": "Drama"})).json()
            for k in (3, 4)
        ]
    assert len({a["recommendation_id"] for a in answers}) == 2

    consumer = AIOKafkaConsumer(
        IMPRESSION_TOPIC,
        **kafka_common(service_settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found = {}
    try:
        for _ in range(60):  # up to ~30 s
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == user.encode():
                        impression = decode_impression(record.value or b"")
                        found[str(impression.recommendation_id)] = impression
            if len(found) == 2:
                break
    finally:
        await consumer.stop()
    for answer in answers:
        impression = found[answer["recommendation_id"]]
        assert impression.user_id == user
        assert impression.model_version == model_version == answer["model_version"]
        assert impression.item_ids == [item["item_id"] for item in answer["items"]]
        assert [i.position for i in impression.items] == list(range(len(answer["items"])))
        assert [i.source for i in impression.items] == [i["source"] for i in answer["items"]]
        assert impression.request.k == len(answer["items"])
        assert impression.request.genres == ["Drama"]


async def test_with_kafka_down_answers_keep_their_pace_and_lost_impressions_are_counted(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> None:
    settings = make_api_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # no broker there: Kafka stopped
        api_kafka_timeout_ms=1000,
        api_breaker_failures=1,
        api_request_budget_ms=500,
    )
    before = dropped()
    requests = 40
    async with serve(create_app(settings)) as api:
        for n in range(requests):
            started = time.perf_counter()
            response = await api.get(f"/recommend/u{n % 60}", params={"k": 5})
            elapsed_ms = (time.perf_counter() - started) * 1000
            assert response.status_code == 200
            assert response.json()["source"] == "personalized"
            # Within the request's budget: nothing waits for Kafka's 1 s timeout.
            assert elapsed_ms < settings.api_request_budget_ms
        for _ in range(100):  # the sender gives up on what it holds (bounded: ~10 s)
            lost = {r: dropped()[r] - before[r] for r in DROP_REASONS}
            if sum(lost.values()) >= requests:
                break
            await asyncio.sleep(0.1)
    lost = {r: dropped()[r] - before[r] for r in DROP_REASONS}
    assert lost["kafka_unavailable"] > 0
    assert lost["error"] == 0
    assert sum(lost.values()) == requests  # every impression is accounted for, none sent


async def test_no_impression_is_recorded_when_sampling_is_off(
    make_api_settings: ApiSettings, serve: Serve, model_version: str
) -> None:
    settings = make_api_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", api_impressions_sample=0
    )
    before = dropped()
    async with serve(create_app(settings)) as api:
        for n in range(5):
            body = (await api.get(f"/recommend/u{n}", params={"k": 3})).json()
            assert uuid.UUID(body["recommendation_id"])  # every answer still has its id
    assert dropped() == before  # nothing queued, so nothing lost either
