"""`ApplyProcess` with a stand-in apply process (a few lines that answer each batch with an
empty report): order, restarts and re-sent batches, without Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from streams import apply_process as apply_process_module
from streams.apply_process import ApplyProcess
from streams.apply_protocol import Record

pytestmark = pytest.mark.unit

# Reports every batch, and appends "pid:seq:offsets" to a file for the test to read.
STAND_IN = """
import asyncio, os, sys
from streams.apply_protocol import Report, decode_batch, encode_report, read_frame

async def main(log_path):
    frames = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(frames), sys.stdin.buffer)
    while (body := await read_frame(frames)) is not None:
        seq, records = decode_batch(body)
        with open(log_path, "a") as log:
            log.write(f"{os.getpid()}:{seq}:{','.join(str(r.offset) for r in records)}\\n")
        sys.stdout.buffer.write(encode_report(Report(seq, [], [])))
        sys.stdout.buffer.flush()

asyncio.run(main(sys.argv[1]))
"""


class NoDeadLetters:
    async def send(self, key: bytes | None, value: bytes) -> None:
        raise AssertionError("the stand-in reports no dead letters")


def batch(*offsets: int) -> list[Record]:
    return [Record("events.view", 0, o, None, b"{}") for o in offsets]


def lines(log: Path) -> list[tuple[int, int, str]]:
    found = []
    for line in log.read_text().splitlines():
        pid, seq, offsets = line.split(":")
        found.append((int(pid), int(seq), offsets))
    return found


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apply_process_module, "RESTART_DELAY_S", 0.05)


async def test_batches_are_reported_in_order_and_the_process_stops_on_close(
    tmp_path: Path,
) -> None:
    log = tmp_path / "seen.log"
    process = ApplyProcess(
        NoDeadLetters().send,
        in_flight=2,
        command=lambda: [sys.executable, "-c", STAND_IN, str(log)],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    done = [await process.submit(batch(n, n + 1)) for n in range(0, 10, 2)]
    await asyncio.wait_for(asyncio.gather(*done), 30)
    pid = process.pid
    await process.close()

    assert [(seq, offsets) for _, seq, offsets in lines(log)] == [
        (0, "0,1"), (1, "2,3"), (2, "4,5"), (3, "6,7"), (4, "8,9"),
    ]  # fmt: skip
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


async def test_a_process_that_cannot_be_restarted_is_retried_and_unfinished_batches_resent(
    tmp_path: Path,
) -> None:
    log = tmp_path / "seen.log"
    starts: list[int] = []

    def command() -> list[str]:
        starts.append(len(starts))
        if len(starts) == 2:  # the first restart fails to exec
            return [str(tmp_path / "no-such-program")]
        return [sys.executable, "-c", STAND_IN, str(log)]

    process = ApplyProcess(
        NoDeadLetters().send,
        in_flight=4,
        command=command,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    await asyncio.wait_for(await process.submit(batch(0)), 30)
    first_pid = process.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGSTOP)  # frozen: the next batches wait in its pipe
    waiting = [await process.submit(batch(1)), await process.submit(batch(2))]
    os.kill(first_pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*waiting), 30)
    await process.close()

    assert process.restarts == 1
    assert len(starts) == 3  # the first, the failed restart, the one that worked
    seen = lines(log)
    assert [(seq, offsets) for pid, seq, offsets in seen if pid == first_pid] == [(0, "0")]
    assert [(seq, offsets) for pid, seq, offsets in seen if pid != first_pid] == [
        (1, "1"), (2, "2"),
    ]  # fmt: skip
