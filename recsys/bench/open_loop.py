"""The fixed-rate (open-loop) HTTP/1.1 load generator of `recsys bench api`.

Each request is sent at its scheduled time whether or not earlier ones have answered, and its
latency counts from that scheduled time, so queueing in the server is not hidden (no
coordinated omission).

Threads, not an event loop: the calling thread paces the sends and writes each request itself
on an idle keep-alive connection; every connection has a thread that reads its responses. An
asyncio client would have to hand each send from its pacing thread to the loop (the loop's own
timers wake up to a millisecond late), and that extra wake-up of a sleeping thread is on every
request's path: about a tenth of a millisecond here, counted in every latency.
"""

from __future__ import annotations

import contextlib
import queue
import resource
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from recsys.bench.common import percentiles

REQUEST_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 15.0
_DONE = None  # tells a connection's reader thread to stop


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """Percentiles, max and mean of latencies given in seconds, in milliseconds."""
    return percentiles(latencies_s, scale=1000.0)


def open_loop_schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the start) of a fixed-rate run: evenly spaced, so the offered
    load does not depend on how fast the server answers."""
    if rate <= 0 or seconds <= 0:
        return []
    return [n / rate for n in range(int(rate * seconds))]


def parse_http_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, Content-Length (None if absent) and whether the connection stays open, from a
    response's status line and headers (up to and including the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(parts[1])
    length: int | None = None
    keep_alive = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    return status, length, keep_alive


def _source_of(body: bytes) -> str:
    """The `source` of a /recommend answer; "unreadable" for a body that is not one."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "unreadable"
    return str(answer.get("source")) if isinstance(answer, dict) else "unreadable"


@dataclass
class OpenLoopResult:
    latencies_s: list[float] = field(default_factory=list)  # from the scheduled time
    service_s: list[float] = field(default_factory=list)  # from the moment it was sent
    lag_s: list[float] = field(default_factory=list)  # sent minus scheduled: the client's own
    statuses: dict[int, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, counts: dict[Any, int], key: Any) -> None:
        with self._lock:  # several reader threads count at once
            counts[key] = counts.get(key, 0) + 1


@dataclass(frozen=True)
class _InFlight:
    scheduled: float
    sent: float


class _Connection:
    """One keep-alive connection and the thread that reads its responses, one per request
    written (at most one is in flight: the pacer writes only to idle connections)."""

    def __init__(self, client: OpenLoopClient) -> None:
        self.client = client
        self.sock = socket.create_connection((client.host, client.port), REQUEST_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = self.sock.makefile("rb")
        self.inbox: queue.SimpleQueue[_InFlight | None] = queue.SimpleQueue()
        self.reader = threading.Thread(target=self._read_responses, daemon=True)
        self.reader.start()

    def send(self, request: bytes, scheduled: float) -> None:
        """Write one request; a failed write counts as that request's failure."""
        sent = time.perf_counter()
        try:
            self.sock.sendall(request)
        except OSError as exc:
            self.client.failed(type(exc).__name__)
            self.close()
            return
        self.client.result.lag_s.append(sent - scheduled)
        self.inbox.put(_InFlight(scheduled, sent))

    def _read_responses(self) -> None:
        while (request := self.inbox.get()) is not _DONE:
            try:
                status, body, keep_alive = self._read_one()
            except Exception as exc:  # every failure is counted, by kind, and reported
                self.client.failed(
                    "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                )
                self.close()
                return
            self.client.answered(request, status, body)
            if not keep_alive:
                self.close()
                return
            self.client.idle(self)

    def _read_one(self) -> tuple[int, bytes, bool]:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.stream.readline(65536)
            if not line:
                raise ConnectionError("the server closed the connection")
            head += line
        status, length, keep_alive = parse_http_head(head)
        if length is None:
            raise ValueError("response without Content-Length")
        body = self.stream.read(length)
        if len(body) < length:
            raise ConnectionError("the server closed the connection mid-body")
        return status, body, keep_alive

    def close(self) -> None:
        self.client.closed(self)
        for resource_ in (self.stream, self.sock):
            with contextlib.suppress(OSError):
                resource_.close()

    def stop(self) -> None:
        self.inbox.put(_DONE)


class OpenLoopClient:
    """Raw HTTP/1.1 GETs over at most `max_connections` keep-alive connections; a send that
    finds none idle and the limit reached waits for one (its latency still counts from its
    scheduled time)."""

    def __init__(self, host: str, port: int, max_connections: int, read_source: bool) -> None:
        self.host = host
        self.port = port
        self.read_source = read_source
        self.result = OpenLoopResult()
        self._max = max_connections
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._changed = threading.Condition()
        self._outstanding = 0  # sent and neither answered nor failed
        self._finished = False  # the drain is over: what comes later is not counted

    def run(self, paths: Sequence[str], rate: float) -> float:
        """Send every path at its scheduled time; wait (bounded) for the answers. Returns the
        rate at which requests were actually sent."""
        schedule = open_loop_schedule(rate, len(paths) / rate)
        start = time.perf_counter() + 0.01
        for path, offset in zip(paths, schedule, strict=True):
            scheduled = start + offset
            if (delay := scheduled - time.perf_counter()) > 0:
                time.sleep(delay)
            request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
            self._send(request, scheduled)
        sending_s = time.perf_counter() - start
        self._drain()
        return len(paths) / sending_s if sending_s > 0 else float("nan")

    def _send(self, request: bytes, scheduled: float) -> None:
        connection = self._connection(deadline=scheduled + REQUEST_TIMEOUT_S)
        if connection is None:
            return
        with self._changed:
            self._outstanding += 1
        connection.send(request, scheduled)

    def _connection(self, deadline: float) -> _Connection | None:
        """An idle connection (the longest idle first, so that every connection stays in use
        and none outlives the server's keep-alive timeout), or a new one; None, with the
        failure counted, if none could be had before `deadline`."""
        with self._changed:
            while not self._idle and len(self._open) >= self._max:
                if not self._changed.wait(max(0.0, deadline - time.perf_counter())):
                    self.result.count(self.result.errors, "timeout")
                    return None
            if self._idle:
                return self._idle.popleft()
        try:
            connection = _Connection(self)
        except OSError as exc:
            self.failed(type(exc).__name__, outstanding=False)
            return None
        with self._changed:
            self._open.add(connection)
        return connection

    def answered(self, request: _InFlight, status: int, body: bytes) -> None:
        done = time.perf_counter()
        if self._finished:  # already counted as unfinished
            return
        result = self.result
        result.latencies_s.append(done - request.scheduled)
        result.service_s.append(done - request.sent)
        result.count(result.statuses, status)
        if self.read_source and status == 200:
            result.count(result.sources, _source_of(body))
        with self._changed:
            self._outstanding -= 1
            self._changed.notify_all()

    def failed(self, kind: str, outstanding: bool = True) -> None:
        if self._finished:  # e.g. a read cut short by the closing of an unfinished request
            return
        self.result.count(self.result.errors, kind)
        if outstanding:
            with self._changed:
                self._outstanding -= 1
                self._changed.notify_all()

    def idle(self, connection: _Connection) -> None:
        with self._changed:
            self._idle.append(connection)
            self._changed.notify_all()

    def closed(self, connection: _Connection) -> None:
        with self._changed:
            self._open.discard(connection)
            self._changed.notify_all()

    def _drain(self) -> None:
        """Wait until every request is answered or failed, for at most DRAIN_TIMEOUT_S after
        the last send (each request also has its own REQUEST_TIMEOUT_S), then close all."""
        deadline = time.perf_counter() + DRAIN_TIMEOUT_S
        with self._changed:
            while self._outstanding > 0:
                if not self._changed.wait(max(0.0, deadline - time.perf_counter())):
                    break
            unfinished = self._outstanding
            connections = list(self._open)
            self._finished = True
        if unfinished:
            self.result.errors["unfinished"] = unfinished
        for connection in connections:
            connection.stop()
            connection.close()


def run_open_loop(
    host: str, port: int, paths: Sequence[str], rate: float, read_source: bool, max_conns: int
) -> dict[str, Any]:
    """One fixed-rate run; figures plus the client's CPU seconds per request."""
    client = OpenLoopClient(host, port, max_conns, read_source)
    before = resource.getrusage(resource.RUSAGE_SELF)
    achieved = client.run(paths, rate)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = client.result
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "offered_rate": rate,
        "achieved_rate": achieved,
        "requests": len(paths),
        "answered": len(result.latencies_s),
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "errors": result.errors,
        "sources": result.sources,
        "latency_ms": latency_summary(result.latencies_s),
        "service_time_ms": latency_summary(result.service_s),
        "client_lag_ms": latency_summary(result.lag_s),
        "client_cpu_s": cpu_s,
        "client_cpu_us_per_request": cpu_s / len(paths) * 1e6 if paths else float("nan"),
        "samples_ms": [s * 1000 for s in result.latencies_s],
    }
