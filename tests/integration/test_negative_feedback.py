"""Negative feedback and feedback fatigue through the stream worker's applier into Redis, and out
of GET /recommend and the profile: a real published model, a real Redis, the real app."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.main import create_app
from core.model_version import batch_user_vector
from core.rules import normalize
from core.settings import Settings
from core.user_state import load_state
from schemas import new_event
from schemas.impressions import ImpressedItem, ImpressionEvent, ImpressionRequest
from schemas.topics import IMPRESSION_TOPIC, topic_for
from streams.applier import BatchApplier, SourcedEvent, UpdateConfig
from streams.model_cache import ModelCache
from tests.integration.conftest import ApiSettings, Published, Serve

pytestmark = pytest.mark.integration

USER = "u3"  # a Comedy watcher of the taste model (conftest)


class Stream:
    """Events applied as the worker applies them, each at the next offset of its topic."""

    def __init__(self, redis: aioredis.Redis, **settings: Any) -> None:
        self.applier = BatchApplier(redis, UpdateConfig.from_settings(Settings(**settings)))
        self.models = ModelCache(redis)
        self.offsets: dict[str, int] = {}

    async def apply(self, *records: Any) -> None:
        batch = []
        for record in records:
            topic = (
                IMPRESSION_TOPIC
                if isinstance(record, ImpressionEvent)
                else topic_for(record.event_type)
            )
            self.offsets[topic] = self.offsets.get(topic, -1) + 1
            batch.append(SourcedEvent(record, topic, 0, self.offsets[topic]))
        await self.applier.apply(batch, await self.models.get())


def item_ids(body: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def impression(items: list[str], ts: datetime) -> ImpressionEvent:
    return ImpressionEvent(
        recommendation_id=uuid.uuid4(),
        user_id=USER,
        ts=ts,
        source="personalized",
        items=[
            ImpressedItem(item_id=item, position=n, source="personalized", score=1.0)
            for n, item in enumerate(items)
        ],
        request=ImpressionRequest(k=len(items), diversity=1.0),
    )


async def test_a_dislike_moves_the_vector_away_and_keeps_the_item_out_for_its_time(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    version = published.version
    async with serve(create_app(make_api_settings())) as api:
        before = item_ids((await api.get(f"/recommend/{USER}", params={"k": 5})).json())
    disliked = before[0]
    item_row = list(published.artifacts.item_ids).index(disliked)
    item_vector = normalize(published.artifacts.item_vectors[item_row])
    start = await batch_user_vector(redis, version, USER)
    assert start is not None

    # A history of 2 events: three views push the dislike out of it, so only the feedback
    # record can keep the item out of the answers.
    stream = Stream(redis, stream_history_length=2)
    now = datetime.now(UTC)
    await stream.apply(new_event("dislike", USER, disliked, ts=now))
    after = (await load_state(redis, USER)).vector
    assert after is not None
    assert float(after @ item_vector) < float(normalize(start) @ item_vector) - 0.05
    others = [i for i in published.artifacts.item_ids if i.startswith("c") and i not in before]
    await stream.apply(*(new_event("view", USER, i, ts=now) for i in others[:3]))
    state = await load_state(redis, USER)
    assert disliked not in state.history_item_ids

    async with serve(create_app(make_api_settings())) as api:
        answer = (await api.get(f"/recommend/{USER}", params={"k": 60})).json()
        profile = (await api.get(f"/users/{USER}/profile")).json()
    assert answer["source"] == "personalized"
    assert disliked not in item_ids(answer)
    (feedback,) = profile["negative_feedback"]
    assert (feedback["item_id"], feedback["event_type"]) == (disliked, "dislike")
    assert feedback["excluded_until_ms"] - feedback["ts_ms"] == 30 * 86_400_000

    # Once its time is over (none at all here), the item may come back.
    async with serve(create_app(make_api_settings(feedback_exclude_days=0))) as api:
        plenty = (await api.get(f"/recommend/{USER}", params={"k": 60})).json()
    assert disliked in item_ids(plenty)


async def test_items_shown_again_and_again_without_a_click_are_demoted_or_left_out(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    async with serve(create_app(make_api_settings())) as api:
        first = item_ids((await api.get(f"/recommend/{USER}", params={"k": 5})).json())
    shown = first[:2]
    stream = Stream(redis, fatigue_impressions=3)
    now = datetime.now(UTC)
    await stream.apply(*(impression(shown, now + timedelta(seconds=n)) for n in range(2)))
    async with serve(create_app(make_api_settings())) as api:
        twice = item_ids((await api.get(f"/recommend/{USER}", params={"k": 5})).json())
    assert twice[:2] == shown  # two impressions are not yet tiring

    await stream.apply(impression(shown, now + timedelta(seconds=3)))
    async with serve(create_app(make_api_settings())) as api:
        demoted = item_ids((await api.get(f"/recommend/{USER}", params={"k": 5})).json())
        profile = (await api.get(f"/users/{USER}/profile")).json()
        every = item_ids((await api.get(f"/recommend/{USER}", params={"k": 60})).json())
    assert not set(shown) & set(demoted)
    assert profile["tired_items"] == 2
    assert set(every[-2:]) == set(shown)  # after all the others
    async with serve(create_app(make_api_settings(fatigue_action="exclude"))) as api:
        excluded = item_ids((await api.get(f"/recommend/{USER}", params={"k": 60})).json())
    assert not set(shown) & set(excluded)
    async with serve(create_app(make_api_settings(fatigue_action="off"))) as api:
        off = item_ids((await api.get(f"/recommend/{USER}", params={"k": 5})).json())
    assert off[:2] == shown

    # A click ends the clicked item's fatigue, not the other's.
    await stream.apply(new_event("click", USER, shown[0], ts=now))
    async with serve(create_app(make_api_settings())) as api:
        profile = (await api.get(f"/users/{USER}/profile")).json()
    assert profile["tired_items"] == 1


async def test_a_disliked_item_is_never_given_as_a_reason(
    redis: aioredis.Redis, published: Published, make_api_settings: ApiSettings, serve: Serve
) -> None:
    """`explain=true` names the user's recent interests: a dislike is in the history, but it is
    no reason to recommend what resembles it."""
    stream = Stream(redis)
    now = datetime.now(UTC)
    await stream.apply(
        new_event("view", USER, "c1", ts=now), new_event("dislike", USER, "d2", ts=now)
    )
    async with serve(create_app(make_api_settings())) as api:
        answer = (await api.get(f"/recommend/{USER}", params={"k": 10, "explain": True})).json()
    reasons = {c["item_id"] for item in answer["items"] for c in item.get("explanation") or []}
    assert reasons == {"c1"}
