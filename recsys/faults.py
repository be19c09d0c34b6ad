"""Faults injected into running services, for the fault tests and soak benchmarks: kill one
worker process of `recsys serve --workers N` and watch uvicorn's supervisor replace it; give a
directory a small file system of its own and fill it up, then free it; make a directory
read-only for a while.

Linux only (the API workers are found through /proc); the file-system faults need the right to
mount (root with CAP_SYS_ADMIN) and raise `FaultUnavailableError` where it is missing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from infra.local.process import TCP_ESTABLISHED, TCP_LISTEN, process_tree, sockets_by_process


class FaultUnavailableError(RuntimeError):
    """This machine cannot inject the fault (no right to mount, say); the message says why."""


# --- API worker processes -------------------------------------------------------------------


def api_worker_pids(supervisor_pid: int, port: int) -> list[int]:
    """The worker processes of a `recsys serve` supervisor, sorted: the processes of its tree
    that hold the listening socket, less the supervisor that opened it."""
    tree = process_tree(supervisor_pid)
    listening = sockets_by_process(tree, port, TCP_LISTEN)
    return sorted(pid for pid, held in listening.items() if held and pid != supervisor_pid)


def kill_api_worker(supervisor_pid: int, port: int, pid: int | None = None) -> int:
    """SIGKILL to one worker (`pid`, else the first found): no shutdown hook runs, and the
    requests it had accepted get a reset connection. Returns the pid killed."""
    workers = api_worker_pids(supervisor_pid, port)
    if pid is None:
        if not workers:
            raise FaultUnavailableError(
                f"no worker of supervisor {supervisor_pid} holds port {port}"
            )
        pid = workers[0]
    elif pid not in workers:
        raise ValueError(f"{pid} is not a worker of supervisor {supervisor_pid}")
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_replacement(
    supervisor_pid: int, port: int, killed: int, workers: int, timeout_s: float = 60.0
) -> list[int]:
    """Wait until the supervisor runs `workers` workers again, `killed` not among them; returns
    their pids. A replacement holds the listening socket from its start, before its app has
    started: `wait_until_serving` tells when it answers."""
    deadline = time.monotonic() + timeout_s
    found: list[int] = []
    while time.monotonic() < deadline:
        found = api_worker_pids(supervisor_pid, port)
        if len(found) == workers and killed not in found:
            return found
        time.sleep(0.1)
    raise TimeoutError(
        f"worker {killed} was not replaced within {timeout_s:.0f} s (workers now: {found})"
    )


def wait_until_serving(pid: int, port: int, timeout_s: float = 60.0) -> float:
    """Wait until worker `pid` holds an accepted connection on `port` (so its app has started
    and it takes requests); needs traffic meanwhile. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if sockets_by_process([pid], port, TCP_ESTABLISHED).get(pid, 0):
            return time.monotonic() - started
        time.sleep(0.02)
    raise TimeoutError(f"worker {pid} accepted no connection within {timeout_s:.0f} s")


# --- A file system that fills up --------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted on `mount_point` (created if missing) for the block:
    a place whose disk can be filled for real (as root, `chmod` stops no write). Raises
    FaultUnavailableError where mounting is not permitted."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FaultUnavailableError(
            f"`mount -t tmpfs` failed ({result.returncode}): {result.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        # Lazy: a process that still has a file open there must not keep the mount alive.
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def _mount(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FaultUnavailableError(
            f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
        )


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """`directory` read-only for the block: a read-only bind mount of it onto itself (as root,
    `chmod` stops no write). Files opened before keep their writes; every new file, rename or
    directory in it is refused with EROFS. Raises FaultUnavailableError where mounting is not
    permitted."""
    where = str(directory)
    _mount(["mount", "--bind", where, where])
    try:
        _mount(["mount", "-o", "remount,bind,ro", where])
        yield directory
    finally:
        # Lazy: a process that still has a file open there must not keep the mount alive.
        subprocess.run(["umount", "-l", where], capture_output=True, check=False)


def fill_disk(directory: Path, chunk: int = 1 << 16) -> Path:
    """Write one file into `directory` until its file system has no byte left (ENOSPC);
    returns the file, whose removal gives the space back."""
    filler = directory / f".filler-{os.getpid()}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (chunk, 4096, 1):  # down to the last page, then the last byte
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
