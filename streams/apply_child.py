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
from typing import BinaryIO

from recsys.clients import redis_client
from recsys.heap import tune_for_long_running_process
from recsys.settings import Settings
from recsys.tracing import setup_tracing
from streams.applier import UpdateConfig
from streams.apply_protocol import Report, decode_batch, encode_report, read_frame
from streams.metrics import JournalRecorder
from streams.processor import EventProcessor

SERVICE_NAME = "recsys-worker"  # its spans belong to the worker


async def serve(
    settings: Settings, frames: asyncio.StreamReader, replies: BinaryIO, model_refresh_s: float
) -> None:
    """Apply every batch read from `frames`, writing one report each to `replies`."""
    dead_letters: list[tuple[bytes | None, bytes]] = []

    async def keep_dead_letter(key: bytes | None, value: bytes) -> None:
        dead_letters.append((key, value))  # delivered by the worker before it acknowledges

    recorder = JournalRecorder()
    redis = redis_client(settings)
    processor = EventProcessor(
        redis,
        UpdateConfig.from_settings(settings),
        keep_dead_letter,
        model_refresh_s=model_refresh_s,
        recorder=recorder,
    )
    try:
        while (body := await read_frame(frames)) is not None:
            seq, records = decode_batch(body)
            await processor.process(records)
            replies.write(encode_report(Report(seq, list(dead_letters), recorder.take())))
            dead_letters.clear()
    finally:
        await redis.aclose()


async def _serve_stdio(settings: Settings, replies: BinaryIO, model_refresh_s: float) -> None:
    frames = asyncio.StreamReader(limit=1 << 26)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(frames), sys.stdin.buffer
    )
    await serve(settings, frames, replies, model_refresh_s)


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
