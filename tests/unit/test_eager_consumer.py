"""The worker's Kafka consumer runs each message's callback eagerly, and behaves as Faust's own
where the callback has to wait (a full buffer) or is interrupted (a rebalance)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode.utils.locks import Event

from streams.eager_consumer import EagerCallbackApp, EagerCallbackConsumer, finish

pytestmark = pytest.mark.unit


def consumer() -> EagerCallbackConsumer:
    app = EagerCallbackApp("eager-test", broker="kafka://127.0.0.1:1")  # never connects
    assert isinstance(app.consumer, EagerCallbackConsumer)
    return app.consumer


async def test_a_callback_that_never_waits_runs_to_its_end_without_a_task() -> None:
    ran_in: list[asyncio.Task[Any] | None] = []

    async def callback(value: int) -> int:
        ran_in.append(asyncio.current_task())
        return value * 2

    interrupt = asyncio.Event()
    result = await consumer().wait_first(callback(21), interrupt.wait())
    assert result.results == [42]
    assert not result.stopped
    assert ran_in == [asyncio.current_task()]  # in the caller's task: none was created


async def test_a_callback_that_waits_is_finished_with_its_result() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    gate.put_nowait(0)  # full: the callback waits for room, as a full stream buffer does

    async def callback() -> str:
        await gate.put(1)
        await asyncio.sleep(0)  # a bare yield too
        return "delivered"

    async def make_room() -> None:
        await asyncio.sleep(0.01)
        gate.get_nowait()

    interrupt = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(make_room())
        result = await consumer().wait_first(callback(), interrupt.wait())
    assert result.results == ["delivered"]
    assert gate.get_nowait() == 1


async def test_an_interrupt_cancels_a_waiting_callback_which_cleans_up() -> None:
    lock = asyncio.Lock()
    gate: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    gate.put_nowait(0)
    cleaned_up = asyncio.Event()

    async def callback() -> None:
        async with lock:
            try:
                await gate.put(1)  # never gets room
            except asyncio.CancelledError:
                cleaned_up.set()
                raise

    interrupt = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, interrupt.set)
    result = await consumer().wait_first(callback(), interrupt.wait())
    assert result.results == [True]  # the interrupt won
    await asyncio.sleep(0)
    assert cleaned_up.is_set()
    assert not lock.locked()
    assert gate.qsize() == 1  # nothing was put


async def test_errors_of_the_callback_propagate_either_way() -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad message")

    async def fails_after_waiting() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("later")

    with pytest.raises(ValueError, match="bad message"):
        await consumer().wait_first(fails_at_once(), asyncio.Event().wait())
    with pytest.raises(KeyError, match="later"):
        await consumer().wait_first(fails_after_waiting(), asyncio.Event().wait())


async def test_finish_passes_on_the_result_or_exception_of_what_it_waited_on() -> None:
    loop = asyncio.get_running_loop()

    async def waits_on(future: asyncio.Future[int]) -> int:
        return await future + 1

    ok: asyncio.Future[int] = loop.create_future()
    coro = waits_on(ok)
    waiting_on = coro.send(None)
    assert waiting_on is ok
    loop.call_soon(ok.set_result, 41)
    assert await finish(coro, waiting_on) == 42

    failed: asyncio.Future[int] = loop.create_future()
    coro = waits_on(failed)
    waiting_on = coro.send(None)
    loop.call_soon(failed.set_exception, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await finish(coro, waiting_on)


async def test_other_waits_keep_faust_behaviour() -> None:
    other = consumer()
    event = Event()  # mode's, as Faust's own waits use
    asyncio.get_running_loop().call_later(0.01, event.set)
    result = await other.wait_first(event, timeout=1.0)  # not the fetch loop's call
    assert len(result.done) == 1
    assert result.done[0] is event
    assert not result.stopped
