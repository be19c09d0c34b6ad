"""`python -m streams.apply_child`: the apply process of one stream worker.

The worker process (Faust) consumes and acknowledges; this process decodes, dead-letters and
applies each batch it is handed, in order, with the same `EventProcessor` a worker would run
in-process. Both processes are CPU-bound in Python, so splitting the work gives each its own
core (see BENCHMARKS.md, "Stream worker"). Frames arrive on stdin and reports leave on stdout
(`streams.apply_protocol`); anything a library prints goes to stderr, the worker's log.

The process ends when stdin closes: when the worker stops, or dies. A batch being applied at
that moment is finished first; the worker acknowledges nothing it has no report for, so Kafka
redelivers such a batch, and applying it again changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from core.clients import redis_client_for, redis_unavailable
from core.heap import tune_for_long_running_process
from core.settings import Settings
from core.tracing import setup_tracing
from streams.applier import UpdateConfig
from streams.apply_protocol import Report, decode_batch, encode_report, read_frame
from streams.drift import WorkerDrift
from streams.metrics import JournalRecorder
from streams.processor import DecodedBatch, EventProcessor

SERVICE_NAME = "recsys-worker"  # its spans belong to the worker


# Batches are split by partition into this many lanes, applied concurrently: while one lane
# waits for Redis to run its scripts, another computes (see `DecodedBatch.split`).
LANES = 2


def lanes_for(settings: Settings) -> int:
    """One lane on a Redis Cluster: there a batch costs a script call per slot it touches, and
    two lanes double the calls (two parts touch nearly the same slots), which costs more than
    the overlap gains."""
    return 1 if settings.redis_cluster else LANES


_LaneWork = asyncio.Queue[tuple[DecodedBatch, asyncio.Future[None]] | None]


async def serve(
    settings: Settings,
    frames: asyncio.StreamReader,
    replies: BinaryIO,
    model_refresh_s: float,
    lanes: int = LANES,
) -> None:
    """Apply every batch read from `frames`, writing one report each, in order, to `replies`."""
    dead_letters: list[tuple[bytes | None, bytes]] = []

    async def keep_dead_letter(key: bytes | None, value: bytes) -> None:
        dead_letters.append((key, value))  # delivered by the worker before it acknowledges

    recorder = JournalRecorder()
    redis = redis_client_for(settings)
    processor = EventProcessor(
        redis,
        UpdateConfig.from_settings(settings),
        keep_dead_letter,
        model_refresh_s=model_refresh_s,
        recorder=recorder,
        drift=WorkerDrift(redis, settings),
    )
    loop = asyncio.get_running_loop()
    # The worker bounds the batches in flight, and so the length of these queues.
    lane_work: list[_LaneWork] = [asyncio.Queue() for _ in range(lanes)]
    to_report: asyncio.Queue[_PendingReport | None] = asyncio.Queue()

    async def apply_lane(work: _LaneWork) -> None:
        while (item := await work.get()) is not None:
            part, applied = item
            await processor.apply(part)
            applied.set_result(None)

    async def report_in_order() -> None:
        while (pending := await to_report.get()) is not None:
            await asyncio.gather(*pending.parts_applied)
            recorder.batch(pending.messages, time.perf_counter() - pending.started)
            # Every dead letter of this batch is in by now (a later batch's may be too: it is
            # delivered early, never late).
            report = Report(pending.seq, list(dead_letters), recorder.take())
            dead_letters.clear()
            replies.write(encode_report(report))

    async def read_batches() -> None:
        while (body := await read_frame(frames)) is not None:
            started = time.perf_counter()
            seq, records = decode_batch(body)
            decoded = await processor.decode(records)
            pending = _PendingReport(seq, len(records), started)
            for lane, part in enumerate(decoded.split(lanes)):
                if part.events:
                    applied = loop.create_future()
                    lane_work[lane].put_nowait((part, applied))
                    pending.parts_applied.append(applied)
            to_report.put_nowait(pending)
        for work in lane_work:  # stdin closed: finish what was read, then stop
            work.put_nowait(None)
        to_report.put_nowait(None)

    try:
        # Load the model while the worker joins its consumer group, not with the first batch;
        # if Redis is not there yet, the first batch retries as usual.
        try:
            await processor.models.get()
        except Exception as exc:
            if not redis_unavailable(exc):
                raise
        # Any failure ends the process (the worker starts a new one and sends the batches it has
        # no report for again); the others are cancelled rather than left waiting for it.
        async with asyncio.TaskGroup() as group:
            group.create_task(read_batches())
            group.create_task(report_in_order())
            for work in lane_work:
                group.create_task(apply_lane(work))
    finally:
        await redis.aclose()


@dataclass
class _PendingReport:
    seq: int
    messages: int
    started: float
    parts_applied: list[asyncio.Future[None]] = field(default_factory=list)


async def _serve_stdio(settings: Settings, replies: BinaryIO, model_refresh_s: float) -> None:
    frames = asyncio.StreamReader(limit=1 << 26)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(frames), sys.stdin.buffer
    )
    await serve(settings, frames, replies, model_refresh_s, lanes=lanes_for(settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-refresh-s", type=float, default=5.0)
    args = parser.parse_args()
    # The protocol owns what was stdout; a stray print from any library lands in the log.
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    tune_for_long_running_process(raise_young_threshold=True)
    settings = Settings()
    setup_tracing(settings, SERVICE_NAME)
    asyncio.run(_serve_stdio(settings, replies, args.model_refresh_s))


if __name__ == "__main__":
    main()
