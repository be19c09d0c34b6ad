"""The Faust application: one agent that hands batches of events to the worker's apply process.

Events are taken with `noack_take` and handed, undecoded, to an apply process
(`streams.apply_process`), several batches in flight; each batch is acknowledged, in order,
only once its effect is written to Redis (and its invalid messages delivered to the
dead-letter topic). Faust commits acknowledged offsets only, so a crash at any point leads to
redelivery, which the applier recognises and skips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.heap import tune_for_long_running_process
from core.settings import Settings
from schemas.topics import DLQ_TOPIC, EVENT_TOPICS, IMPRESSION_TOPIC
from streams.apply_process import ApplyProcess
from streams.eager_consumer import EagerCallbackApp
from streams.processor import RawMessage


class BatchSubmitter(Protocol):
    """Takes a batch of consumed messages; the awaitable it returns completes once the batch
    is applied (`ApplyProcess`, or a stand-in in tests and in `recsys.bench.noop_drain`)."""

    async def submit(self, messages: Sequence[RawMessage]) -> Awaitable[None]: ...


@dataclass
class WorkerOptions:
    group_id: str | None = None  # default: settings.stream_group_id
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    session_timeout_s: float = 10.0
    model_refresh_s: float = 5.0


def run_worker(app: faust.App, loglevel: str) -> None:
    """Run `app` in this process until it is stopped, as `recsys worker` does."""
    # A worker drains events for hours: keep its long-lived heap out of the collector's scans.
    tune_for_long_running_process(raise_young_threshold=True)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def create_app(
    settings: Settings, options: WorkerOptions | None = None, processor: Any = None
) -> faust.App:
    """Build the worker app. `processor` (a `BatchSubmitter`) replaces the apply process
    (tests of the agent, the no-op drain)."""
    options = options or WorkerOptions()
    # Faust keeps table metadata in a directory that defaults to one relative to the current
    # directory; keep it with the rest of the runtime state instead.
    faust_dir = settings.state_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = EagerCallbackApp(
        options.group_id or settings.stream_group_id,
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=faust_dir / "{conf.name}",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=options.session_timeout_s,
        broker_heartbeat_interval=max(0.5, options.session_timeout_s / 10),
        broker_commit_interval=1.0,
        producer_acks=-1,
        web_host=options.web_host,
        web_port=options.web_port,
        web_bind=options.web_host,
        web_in_thread=False,
        # Room for the batches in flight and several more: with Faust's default (4,096) the
        # buffer filled while the apply process worked, Faust paused fetching, and each resume
        # cost a fetch round trip (about 8% of the throughput in ad-hoc drains).
        stream_buffer_maxsize=4 * settings.stream_batch_size * settings.stream_batches_in_flight,
    )
    # Impressions too: the worker keeps what feedback fatigue needs in the users' state.
    events = app.topic(*EVENT_TOPICS, IMPRESSION_TOPIC, key_type=bytes, value_type=bytes)
    dead_letters = app.topic(DLQ_TOPIC, key_type=bytes, value_type=bytes)

    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        delivered = await dead_letters.send(key=key, value=value)
        await delivered  # on the broker before the source message is acknowledged

    state: dict[str, ApplyProcess] = {}

    def current_processor() -> BatchSubmitter:
        if processor is not None:
            return cast(BatchSubmitter, processor)
        if "p" not in state:  # created on the worker's own event loop, at first use
            state["p"] = ApplyProcess(
                send_dead_letter,
                in_flight=settings.stream_batches_in_flight,
                model_refresh_s=options.model_refresh_s,
            )
        return state["p"]

    @app.agent(events, name="apply_events")
    async def apply_events(stream: Any) -> None:  # a faust.Stream (noack_take is untyped)
        # Bounded: while acknowledging lags (a dead letter waiting for Kafka), stop taking.
        applied_in_order: asyncio.Queue[tuple[Awaitable[None], list[Any]] | None] = asyncio.Queue(
            maxsize=settings.stream_batches_in_flight
        )

        async def acknowledge() -> None:
            while (item := await applied_in_order.get()) is not None:
                done, batch = item
                await done
                for event in batch:
                    await stream.ack(event)

        submitter = current_processor()
        if isinstance(submitter, ApplyProcess):
            # Started now, not with the first batch: it starts while the consumer joins its
            # group, so the first events after a (re)start do not wait for it.
            await submitter.start()
        try:
            async with asyncio.TaskGroup() as group:  # an acknowledging failure stops the agent
                group.create_task(acknowledge())
                async for batch in stream.noack_take(
                    settings.stream_batch_size, within=settings.stream_batch_wait_ms / 1000
                ):
                    done = await submitter.submit([event.message for event in batch])
                    await applied_in_order.put((done, batch))
                await applied_in_order.put(None)
        finally:
            while not applied_in_order.empty():  # stopping: these will never be acknowledged
                item = applied_in_order.get_nowait()
                if item is not None and asyncio.iscoroutine(item[0]):
                    item[0].close()
            if isinstance(submitter, ApplyProcess):
                state.pop("p", None)
                await submitter.close()

    @app.page("/ready")
    async def ready_page(web: Any, request: Any) -> Any:
        # Ready = consuming: partitions assigned and an apply process running. A worker beyond
        # the partition count stays unready (it has nothing to consume) but alive (/metrics).
        assigned = bool(app.consumer.assignment())
        applying = processor is not None or ("p" in state and state["p"].pid is not None)
        status = 200 if assigned and applying else 503
        body = {"ready": status == 200, "partitions_assigned": assigned, "applying": applying}
        return web.json(body, status=status)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp takes the charset separately from the content type.
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app
