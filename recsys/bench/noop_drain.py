"""`python -m recsys.bench.noop_drain`: how fast Faust alone drains a backlog on this machine.

`recsys bench stream` runs this after the real worker has drained its backlog, with a consumer
group of its own over the same events. The app and agent are the worker's own (same topics,
batching and acknowledgements); only the processor is replaced by one that counts and applies
nothing. Its rate is the ceiling that any processing can reach in one worker process here, so
the benchmark can say how much of the worker's time is Faust's and how much is ours.

Settings come from the environment, as for `recsys worker`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from core.settings import Settings
from infra.local.process import free_port
from streams.app import WorkerOptions, create_app, run_worker


class CountingProcessor:
    """Counts messages; writes the rate to `out` and ends the process after `total`."""

    def __init__(
        self,
        total: int,
        out: Path,
        clock: Callable[[], float] = time.perf_counter,
        exit_process: Callable[[int], Any] = os._exit,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.total = total
        self.out = out
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.first_cpu = 0.0
        self.exit_process = exit_process
        self.done = 0
        self.first_at: float | None = None
        self.first_batch = 0

    async def submit(self, messages: Sequence[Any]) -> Awaitable[None]:
        """Counts the batch; it is "applied" at once."""
        now, cpu = self.clock(), self.cpu_clock()
        if self.first_at is None:
            # Timed from the first batch, like the worker's own drain: its events do not count.
            self.first_at, self.first_batch, self.first_cpu = now, len(messages), cpu
        self.done += len(messages)
        if self.done >= self.total:
            seconds = now - self.first_at
            counted = self.done - self.first_batch
            rate = counted / seconds if seconds > 0 else float("nan")
            cpu_us = (cpu - self.first_cpu) / counted * 1e6 if counted else float("nan")
            self.out.write_text(json.dumps({"events": self.done, "seconds": seconds,
                                            "events_per_s": rate,
                                            "cpu_us_per_event": cpu_us}))  # fmt: skip
            # A throwaway consumer group needs no clean leave, and exiting at once keeps
            # Faust's shutdown out of the measurement.
            self.exit_process(0)
        return asyncio.sleep(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    app = create_app(
        Settings(),
        WorkerOptions(group_id=args.group_id, web_port=free_port()),
        processor=CountingProcessor(args.events, args.out),
    )
    run_worker(app, loglevel="warning")


if __name__ == "__main__":
    main()
