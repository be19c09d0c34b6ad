"""The impression recorder's queue: sampling, never waiting on the request path, and counting
what it cannot keep (a stand-in publisher that Kafka-like blocks or fails; no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api.impressions import ImpressionRecorder, _Shown, encode_shown
from api.models import RecommendationItem, RecommendationResponse
from api.publisher import KafkaUnavailableError
from api.recommender import RecommendQuery
from core.settings import Settings
from schemas.impressions import decode_impression

pytestmark = pytest.mark.unit

QUERY = RecommendQuery(user_id="u1", k=2, diversity=0.8, exclude_ids=frozenset({"x"}))


def answer() -> RecommendationResponse:
    items = [
        RecommendationItem(item_id=i, score=s, source="personalized")
        for i, s in (("a", 0.9), ("b", 0.5))
    ]
    return RecommendationResponse(user_id="u1", items=items, source="personalized")


def dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("recsys_api_impressions_dropped_total", {"reason": reason})
    return value or 0.0


class Publisher:
    """Records what it is sent; blocks until `release` is set, or fails when `down`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[bytes, bytes]]]] = []
        self.release = asyncio.Event()
        self.down = False

    async def publish_raw(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        await self.release.wait()
        if self.down:
            raise KafkaUnavailableError("down")
        self.sent.append((topic, list(messages)))


def recorder(publisher: Publisher, draw: Any = None, **settings: Any) -> ImpressionRecorder:
    options = {
        "api_impressions_queue": 3,
        "api_impressions_batch": 2,
        "api_impressions_linger_ms": 0,
    } | settings
    kwargs = {"draw": draw} if draw else {}
    return ImpressionRecorder(Settings(**options), publisher, **kwargs)  # type: ignore[arg-type]


async def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    publisher = Publisher()
    impressions = recorder(publisher)
    impressions.start()
    before = dropped("queue_full")
    answers = [answer() for _ in range(8)]
    for item in answers:
        impressions.record(QUERY, item)  # returns at once although nothing is sent yet
    await asyncio.sleep(0)  # the sender takes up to a batch (2) and waits on Kafka
    for item in answers[:3]:
        impressions.record(QUERY, item)
    publisher.release.set()
    await impressions.close()
    sent = [m for _, batch in publisher.sent for m in batch]
    assert dropped("queue_full") - before == 11 - len(sent)
    assert len(sent) == 5  # a batch of 2 in flight, then the 3 the queue held
    assert {topic for topic, _ in publisher.sent} == {"events.impression"}
    key, value = sent[0]
    impression = decode_impression(value)
    assert key == b"u1"
    assert str(impression.recommendation_id) == str(answers[0].recommendation_id)
    assert impression.item_ids == ["a", "b"]
    assert impression.request.excluded_ids == 1


async def test_sampling_keeps_the_chosen_share() -> None:
    draws = iter([0.1, 0.7, 0.2, 0.9])
    publisher = Publisher()
    publisher.release.set()
    impressions = recorder(publisher, draw=lambda: next(draws), api_impressions_sample=0.5)
    impressions.start()
    for _ in range(4):
        impressions.record(QUERY, answer())
    await impressions.close()
    assert sum(len(batch) for _, batch in publisher.sent) == 2


async def test_an_unavailable_kafka_counts_each_lost_impression() -> None:
    publisher = Publisher()
    publisher.down = True
    publisher.release.set()
    impressions = recorder(publisher, api_impressions_queue=100)
    impressions.start()
    before = dropped("kafka_unavailable")
    for _ in range(5):
        impressions.record(QUERY, answer())
    await impressions.close()
    assert dropped("kafka_unavailable") - before == 5
    assert publisher.sent == []


async def test_answers_gather_for_the_linger_time_and_go_in_one_send() -> None:
    publisher = Publisher()
    publisher.release.set()
    impressions = recorder(
        publisher, api_impressions_queue=100, api_impressions_batch=50, api_impressions_linger_ms=50
    )
    impressions.start()
    for _ in range(5):
        impressions.record(QUERY, answer())
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)
    assert [len(batch) for _, batch in publisher.sent] == [5]
    await impressions.close()


def test_an_answer_of_an_experiment_is_recorded_with_its_variant() -> None:
    served = answer()
    served.experiment, served.variant = "homepage", "diverse"
    impression = decode_impression(encode_shown(_Shown(datetime.now(UTC), QUERY, served)))
    assert (impression.experiment, impression.variant) == ("homepage", "diverse")
    plain = decode_impression(encode_shown(_Shown(datetime.now(UTC), QUERY, answer())))
    assert plain.variant is None
