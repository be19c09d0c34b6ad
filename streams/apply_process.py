"""The worker's side of its apply process (`streams.apply_child`): hand batches over, in order,
and learn when each is applied.

`submit` sends a batch and returns at once (waiting only while `in_flight` batches are already
out), with an awaitable that completes once the batch is applied in Redis, its dead letters
are delivered to Kafka and its metrics recorded here. The worker acknowledges a batch's
messages only after that, so Kafka commits nothing that is not applied.

If the apply process dies, a new one is started and every batch without a report is sent
again, in the original order. Applying a batch twice changes nothing (per-partition offsets
and event ids, see `streams.applier`), so nothing is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from streams.apply_protocol import ProtocolError, Report, decode_report, encode_batch, read_frame
from streams.metrics import PrometheusRecorder, replay
from streams.processor import DeadLetterSender, RawMessage

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0  # before each restart, so that a child that cannot start does not spin
STOP_TIMEOUT_S = 30.0


@dataclass
class _Pending:
    seq: int
    frame: bytes
    report: asyncio.Future[Report]


class ApplyProcess:
    def __init__(
        self,
        send_dead_letter: DeadLetterSender,
        *,
        in_flight: int,
        model_refresh_s: float = 5.0,
        recorder: PrometheusRecorder | None = None,
        command: Callable[[], list[str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.send_dead_letter = send_dead_letter
        self.recorder = recorder or PrometheusRecorder()
        default = [sys.executable, "-m", "streams.apply_child"]
        default += ["--model-refresh-s", str(model_refresh_s)]
        self._command = command or (lambda: default)
        self._env = env  # None: this process's environment (the worker's settings)
        self._slots = asyncio.Semaphore(in_flight)
        self._pending: deque[_Pending] = deque()
        self._next_seq = 0
        self._child: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # a frame is never sent while a restart resends
        self._closing = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The apply process's pid, once started."""
        return None if self._child is None else self._child.pid

    async def start(self) -> None:
        """Start the apply process ahead of the first batch (otherwise the first batch does)."""
        async with self._sending:
            if self._child is None:
                await self._start()

    async def submit(self, messages: Sequence[RawMessage]) -> Awaitable[None]:
        await self._slots.acquire()
        async with self._sending:
            if self._child is None:
                await self._start()
            pending = _Pending(
                self._next_seq,
                encode_batch(self._next_seq, messages),
                asyncio.get_running_loop().create_future(),
            )
            self._next_seq += 1
            self._pending.append(pending)
            await self._send(pending.frame)
        return self._finish(pending)

    async def _finish(self, pending: _Pending) -> None:
        report = await pending.report
        for key, value in report.dead_letters:
            await self.send_dead_letter(key, value)
        replay(report.recorded, self.recorder)

    async def _start(self) -> None:
        self._child = await asyncio.create_subprocess_exec(
            *self._command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
            env=self._env,
        )
        self._reader = asyncio.create_task(self._read_reports(self._child))

    async def _send(self, frame: bytes) -> None:
        assert self._child is not None
        assert self._child.stdin is not None
        try:
            self._child.stdin.write(frame)
            await self._child.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone: the reader notices, restarts it and sends this again

    async def _read_reports(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        try:
            while (body := await read_frame(child.stdout)) is not None:
                report = decode_report(body)
                if not self._pending or report.seq != self._pending[0].seq:
                    expected = self._pending[0].seq if self._pending else None
                    raise ProtocolError(f"report for batch {report.seq}, expected {expected}")
                self._pending.popleft().report.set_result(report)
                self._slots.release()  # reported: the next batch may go
        except ProtocolError:
            log.exception("the apply process broke the protocol; restarting it")
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        code = await child.wait()
        if not self._closing:
            await self._restart(code)

    async def _restart(self, code: int) -> None:
        self.restarts += 1
        log.error(
            "the apply process exited (code %s); restarting it and sending its %d "
            "unfinished batches again", code, len(self._pending),
        )  # fmt: skip
        while not self._closing:  # until one starts: meanwhile nothing is acknowledged
            await asyncio.sleep(RESTART_DELAY_S)
            try:
                async with self._sending:
                    await self._start()
                    for pending in self._pending:
                        await self._send(pending.frame)
                return
            except OSError as exc:
                log.error("the apply process could not be started (%r); trying again", exc)

    async def close(self) -> None:
        """Let the apply process finish what it has, then stop it."""
        self._closing = True
        child = self._child
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            child.kill()
            await child.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        for pending in self._pending:
            pending.report.cancel()
