"""Faust's Kafka transport with a consumer that hands over each message without new tasks.

Faust's fetch loop passes every message to its topic's queue with
`Service.wait_first(callback(message), suspend_flow.wait())`, so that a rebalance can cut short a
callback that is waiting (for room in a full stream buffer, say). `wait_first` wraps each of those
in a task and adds two more for the consumer's stopped and crashed events: four tasks per message,
about 30 µs of CPU on this machine, as much as the rest of Faust's per-message work (see
BENCHMARKS.md, "Stream worker").

The callback almost never waits: it deserialises the message and puts it in a queue. So this
consumer runs it directly, up to the point where it would first wait; only one that does wait is
finished under `wait_first` as before, keeping Faust's behaviour during a rebalance. This is the
job asyncio's eager task factory does on Python 3.12 and later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults


class EagerCallbackConsumer(faust_aiokafka.Consumer):
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        # The fetch loop's call: (callback coroutine, the flow-suspended waiter), no time limit.
        if timeout is not None or len(coros) != 2 or not asyncio.iscoroutine(coros[0]):
            return await super().wait_first(*coros, timeout=timeout)
        callback, interrupt = coros
        try:
            waiting_on = callback.send(None)
        except StopIteration as finished:
            _close(interrupt)
            if self._stopped.is_set() or self._crashed.is_set():
                return WaitResults([], [], True)
            return WaitResults([callback], [finished.value], False)
        except BaseException:
            _close(interrupt)
            raise
        return await super().wait_first(finish(callback, waiting_on), interrupt)


class EagerCallbackTransport(faust_aiokafka.Transport):
    Consumer = EagerCallbackConsumer


class EagerCallbackApp(faust.App):
    """A Faust app whose Kafka consumer is `EagerCallbackConsumer`."""

    def _new_transport(self) -> Any:
        return EagerCallbackTransport(self.conf.broker_consumer, self)


async def finish(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Run `coro`, which was started by hand and is waiting on `waiting_on` (what it yielded:
    a future, or None for a bare yield), to its end, stepping it as an asyncio task would."""
    while True:
        thrown: BaseException | None = None
        try:
            await _until_done(waiting_on)
        except asyncio.CancelledError as cancelled:
            # As a task's cancel() does: cancel what it waits on, so that it sees the
            # cancellation where it waits and can clean up (release a lock) before it ends.
            if waiting_on is not None and waiting_on.cancel():
                continue
            thrown = cancelled
        try:
            waiting_on = coro.send(None) if thrown is None else coro.throw(thrown)
        except StopIteration as finished:
            return finished.value


async def _until_done(waiting_on: Any) -> None:
    """Wait until `waiting_on` is done without taking its result: the coroutine that waits on
    it takes the result (or exception) itself when resumed."""
    if waiting_on is None:
        await asyncio.sleep(0)
        return
    waiting_on._asyncio_future_blocking = False  # taken over, as asyncio's Task does
    if waiting_on.done():
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: Any) -> None:
        if not done.done():  # not when we were cancelled meanwhile
            done.set_result(None)

    waiting_on.add_done_callback(wake)
    await done


def _close(coro: Any) -> None:
    if asyncio.iscoroutine(coro):
        coro.close()
