"""The worker's apply process against a real Redis: batches applied in order, dead letters
handed back, and a crashed apply process replaced without losing or repeating an event."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.settings import Settings
from core.user_state import load_state
from schemas import encode_event, new_event
from schemas.dead_letter import DeadLetter
from streams.applied_offsets import applied_offsets
from streams.apply_process import ApplyProcess
from streams.apply_protocol import Record
from tests.integration.test_stream_worker import publish_model

pytestmark = pytest.mark.integration


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    async def send(self, key: bytes | None, value: bytes) -> None:
        self.sent.append(DeadLetter.model_validate_json(value))


@pytest.fixture
async def dead_letters() -> DeadLetters:
    return DeadLetters()


@pytest.fixture
async def apply_process(
    service_settings: Settings, dead_letters: DeadLetters
) -> AsyncIterator[ApplyProcess]:
    process = ApplyProcess(
        dead_letters.send,
        in_flight=2,
        env={**os.environ, "RECSYS_REDIS_URL": service_settings.redis_url},
    )
    yield process
    await process.close()


def views(user: str, first_offset: int, count: int) -> list[Record]:
    return [
        Record("events.view", 0, first_offset + n, user.encode(),
               encode_event(new_event("view", user, f"i{first_offset + n}")))
        for n in range(count)
    ]  # fmt: skip


async def events_applied(redis: aioredis.Redis, user: str) -> int:
    return (await load_state(redis, user)).events


async def test_a_batch_is_applied_and_its_invalid_messages_come_back_as_dead_letters(
    redis: aioredis.Redis, apply_process: ApplyProcess, dead_letters: DeadLetters
) -> None:
    batch = [*views("ap-user", 0, 3), Record("events.view", 0, 3, b"ap-user", b"{not json")]

    done = await apply_process.submit(batch)
    await done

    assert await events_applied(redis, "ap-user") == 3
    assert [(d.source_offset, d.field) for d in dead_letters.sent] == [(3, "body")]
    assert dead_letters.sent[0].original == b"{not json"


async def test_a_killed_apply_process_is_replaced_and_nothing_is_lost_or_doubled(
    redis: aioredis.Redis, apply_process: ApplyProcess
) -> None:
    await (await apply_process.submit(views("crash-user", 0, 5)))
    assert apply_process.pid is not None
    in_flight = [await apply_process.submit(views("crash-user", 5, 5))]
    os.kill(apply_process.pid, signal.SIGKILL)  # with a batch in flight, perhaps half applied
    in_flight.append(await apply_process.submit(views("crash-user", 10, 5)))
    for done in in_flight:
        await done

    assert apply_process.restarts == 1
    assert await events_applied(redis, "crash-user") == 15
    history = (await load_state(redis, "crash-user")).history
    assert [h.item_id for h in history] == [f"i{n}" for n in reversed(range(15))]


async def test_batches_spread_over_partitions_are_applied_exactly_once_with_the_model(
    redis: aioredis.Redis, apply_process: ApplyProcess, tmp_path: Path
) -> None:
    """Each batch is applied in lanes by partition, batches overlapping in time: every user's
    events land once and in order, and the first batch already sees the model."""
    await publish_model(redis, tmp_path)
    users = [f"lane-user-{n}" for n in range(8)]
    partition_of = {user: n % 4 for n, user in enumerate(users)}  # as Kafka's keying would
    offsets = dict.fromkeys(range(4), 0)
    batches: list[list[Record]] = []
    for round_ in range(6):
        batch = []
        for user in users:
            partition = partition_of[user]
            item = f"i{(round_ + len(user)) % 10}"  # items of the published model
            event = new_event("view", user, item)
            batch.append(Record("events.view", partition, offsets[partition], user.encode(),
                                encode_event(event)))  # fmt: skip
            offsets[partition] += 1
        batches.append(batch)

    await (await apply_process.submit(batches[0]))  # both lanes start with the model loaded
    for user in users:
        state = await load_state(redis, user)
        assert state.vector_version is not None
        assert state.vector is not None
    in_flight = [await apply_process.submit(batch) for batch in batches[1:]]
    for done in in_flight:
        await done

    for user in users:
        state = await load_state(redis, user)
        assert state.events == 6
        assert [h.item_id for h in reversed(state.history)] == [
            f"i{(round_ + len(user)) % 10}" for round_ in range(6)
        ]
    assert await applied_offsets(redis, Settings().redis_item_shards) == {
        f"events.view:{p}": offsets[p] - 1 for p in range(4)
    }
