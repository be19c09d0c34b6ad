"""`recsys bench api`: latency at a fixed rate and throughput at saturation of the HTTP API.

Runs on real Redis and Kafka (throwaway local ones on free ports by default, or the configured
ones with --use-running), the embedded Qdrant engine and an ALS model trained on ml-100k and
published the way `recsys train` does. `recsys serve` runs as a subprocess on 127.0.0.1.

For GET /recommend/{user_id} (known users, k=10, MMR over the configured 100 candidates) and,
as the floor, GET /health/live:

1. Fixed rate (open loop): a small asyncio HTTP/1.1 client sends requests at scheduled times,
   whether or not earlier ones have answered, and measures each latency from its scheduled
   time, so queueing in the server is not hidden (no coordinated omission). It also reads every
   /recommend body and counts the `source` of each answer.
2. Saturation: `wrk` (closed loop, keep-alive connections) for a fixed time; its requests/s,
   and its latency percentiles as printed by a Lua `done()` hook.

The load generators' own CPU time is measured (getrusage for the Python client, wait4 for wrk),
and so is the server's and Redis's, since all of them share the machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from infra.local.process import process_cpu_seconds, process_tree
from recsys.benchmarks import redis_cpu_seconds

WRK_INSTALL_HINT = (
    "`wrk` was not found on PATH; the saturation runs need it. Install it with "
    "`sudo apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)."
)
WRK_MARKER = "RECSYS_WRK "
ML100K_USERS = 943  # ml-100k's user ids are "1".."943"
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 15.0


class BenchError(RuntimeError):
    """The benchmark cannot run; the message says what to do."""


@dataclass(frozen=True)
class ApiBenchConfig:
    rate: int = 200
    seconds: float = 30.0
    saturation_seconds: float = 30.0
    connections: int = 8
    wrk_threads: int = 1
    workers: int = 2
    k: int = 10
    diversity: float = 0.8
    warmup_seconds: float = 5.0
    max_connections: int = 64  # of the fixed-rate client; more requests in flight queue
    seed: int = 0


# --- Pure parts (unit-tested) ---------------------------------------------------------------


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float]:
    """Percentiles, max and mean of latencies given in seconds, in milliseconds."""
    arr = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if arr.size == 0:
        return {}
    p50, p95, p99, p999 = np.percentile(arr, [50, 95, 99, 99.9])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def open_loop_schedule(rate: float, seconds: float) -> list[float]:
    """Send offsets (seconds from the start) of a fixed-rate run: evenly spaced, so the offered
    load does not depend on how fast the server answers."""
    if rate <= 0 or seconds <= 0:
        return []
    return [n / rate for n in range(int(rate * seconds))]


def recommend_paths(
    user_ids: Sequence[str], count: int, k: int, diversity: float, seed: int
) -> list[str]:
    """`count` request paths cycling through the users, each cycle in a new random order, so
    every user is asked about equally often and no cache of "the last user" helps."""
    rng = random.Random(seed)
    paths: list[str] = []
    while len(paths) < count:
        users = list(user_ids)
        rng.shuffle(users)
        paths.extend(f"/recommend/{u}?k={k}&diversity={diversity}" for u in users)
    return paths[:count]


# Counts the top-level `source` (it follows the items array) and `reason` of each answer.
_WRK_RESPONSE_HOOK = """
response = function(status, headers, body)
  if status == 200 then
    local source = string.match(body, '%],"source":"(%a+)"') or "unreadable"
    sources[source] = (sources[source] or 0) + 1
    local reason = string.match(body, '"reason":"([^"]*)"')
    if reason then reasons[reason] = (reasons[reason] or 0) + 1 end
  end
end
"""


def wrk_script(paths: Sequence[str], count_sources: bool = False) -> str:
    """A wrk Lua script: requests built once and cycled (each thread from its own offset), and
    a `done()` hook that prints the figures as one JSON line after `WRK_MARKER`. With
    `count_sources`, every /recommend body is read for its `source` and `reason` (this makes
    wrk parse bodies, which its own CPU figure then includes)."""
    quoted = ",\n".join(f"  {json.dumps(p)}" for p in paths)
    hook = _WRK_RESPONSE_HOOK if count_sources else ""
    return f"""-- generated by `recsys bench api`
local paths = {{
{quoted}
}}
local requests = {{}}
local n = 0
local thread_count = 0
local threads = {{}}
sources = {{}}
reasons = {{}}

setup = function(thread)
  thread:set("offset", thread_count * 7919)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end
{hook}
local function merged(name)
  local total = {{}}
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get(name) or {{}}) do
      total[key] = (total[key] or 0) + value
    end
  end
  local parts = {{}}
  for key, value in pairs(total) do
    table.insert(parts, string.format('"%s": %d', key, value))
  end
  return "{{" .. table.concat(parts, ", ") .. "}}"
end

init = function(args)
  for i, p in ipairs(paths) do
    requests[i] = wrk.format("GET", p)
  end
  n = (offset or 0) % #requests
end

request = function()
  n = n % #requests + 1
  return requests[n]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARKER}{{"sources": ' .. merged("sources") .. ', "reasons": ' .. merged("reasons")
    .. ', "requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"errors": {{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}, '
    .. '"latency_us": {{"p50": %d, "p75": %d, "p90": %d, "p95": %d, "p99": %d, '
    .. '"p99.9": %d, "max": %d, "mean": %.1f}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's figures from its output: the `done()` hook's JSON line (latencies in ms) plus the
    requests/s wrk prints itself, which must agree with requests / duration."""
    line = next((ln for ln in output.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise BenchError(f"wrk printed no summary line; its output was:\n{output[-2000:]}")
    raw = json.loads(line[len(WRK_MARKER) :])
    duration_s = raw["duration_us"] / 1e6
    printed_rate = None
    for ln in output.splitlines():
        if ln.strip().startswith("Requests/sec:"):
            printed_rate = float(ln.split(":", 1)[1])
    errors = {k: int(v) for k, v in raw["errors"].items()}
    return {
        "requests": int(raw["requests"]),
        "seconds": duration_s,
        "requests_per_s": raw["requests"] / duration_s if duration_s > 0 else float("nan"),
        "wrk_printed_requests_per_s": printed_rate,
        "errors": errors,
        "ok_requests": int(raw["requests"]) - errors["status"],
        "sources": {k: int(v) for k, v in raw.get("sources", {}).items()},
        "reasons": {k: int(v) for k, v in raw.get("reasons", {}).items()},
        "latency_ms": {k: float(v) / 1000.0 for k, v in raw["latency_us"].items()},
    }


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


def share(counts: dict[str, int], key: str) -> float:
    total = sum(counts.values())
    return counts.get(key, 0) / total if total else float("nan")


# --- The fixed-rate (open-loop) client ------------------------------------------------------


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class OpenLoopResult:
    latencies_s: list[float] = field(default_factory=list)  # from the scheduled time
    service_s: list[float] = field(default_factory=list)  # from the moment it was sent
    lag_s: list[float] = field(default_factory=list)  # sent minus scheduled: the client's own
    statuses: dict[int, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


class OpenLoopClient:
    """Raw HTTP/1.1 GETs over a pool of keep-alive connections (at most `max_connections`):
    much cheaper per request than a general client, so the client's own time stays small."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host = host
        self.port = port
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._opened = 0
        self._max = max_connections

    async def _acquire(self) -> _Connection:
        if self._idle.empty() and self._opened < self._max:
            self._opened += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except BaseException:
                self._opened -= 1
                raise
            return _Connection(reader, writer)
        return await self._idle.get()

    def _discard(self, conn: _Connection) -> None:
        self._opened -= 1
        conn.writer.close()

    async def get(self, path: str) -> tuple[int, bytes]:
        conn = await self._acquire()
        try:
            conn.writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
            )
            head = await conn.reader.readuntil(b"\r\n\r\n")
            status, length, keep_alive = parse_http_head(head)
            if length is None:
                raise ValueError("response without Content-Length")
            body = await conn.reader.readexactly(length)
        except BaseException:
            self._discard(conn)
            raise
        if keep_alive:
            self._idle.put_nowait(conn)
        else:
            self._discard(conn)
        return status, body

    async def close(self) -> None:
        while not self._idle.empty():
            conn = self._idle.get_nowait()
            conn.writer.close()
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


async def _open_loop(
    client: OpenLoopClient, paths: Sequence[str], rate: float, read_source: bool
) -> tuple[OpenLoopResult, float]:
    result = OpenLoopResult()
    schedule = open_loop_schedule(rate, len(paths) / rate)

    async def one(path: str, scheduled: float) -> None:
        sent = time.perf_counter()
        result.lag_s.append(sent - scheduled)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, body = await client.get(path)
        except Exception as exc:  # every failure is counted, by kind, and reported
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            result.errors[kind] = result.errors.get(kind, 0) + 1
            return
        done = time.perf_counter()
        result.latencies_s.append(done - scheduled)
        result.service_s.append(done - sent)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if read_source and status == 200:
            source = str(orjson.loads(body).get("source"))
            result.sources[source] = result.sources.get(source, 0) + 1

    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.01

    def launch(path: str, scheduled: float) -> None:
        tasks.append(loop.create_task(one(path, scheduled)))

    def pace() -> None:
        # A thread paces the sends: the event loop's timers wake up to 1 ms late (epoll's
        # millisecond timeout), which would add to every latency; time.sleep is ~0.1 ms
        # accurate, and call_soon_threadsafe wakes the loop at once.
        for path, offset in zip(paths, schedule, strict=True):
            scheduled = start + offset
            if (delay := scheduled - time.perf_counter()) > 0:
                time.sleep(delay)
            loop.call_soon_threadsafe(launch, path, scheduled)

    await asyncio.to_thread(pace)
    sending_s = time.perf_counter() - start
    # Bounded: whatever has not answered DRAIN_TIMEOUT_S after the last send is cancelled
    # (each request also has its own REQUEST_TIMEOUT_S).
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    if pending:
        result.errors["unfinished"] = len(pending)
    return result, len(paths) / sending_s if sending_s > 0 else float("nan")


def run_open_loop(
    host: str, port: int, paths: Sequence[str], rate: float, read_source: bool, max_conns: int
) -> dict[str, Any]:
    """One fixed-rate run; figures plus the client's CPU seconds per request."""

    async def main() -> tuple[OpenLoopResult, float]:
        client = OpenLoopClient(host, port, max_conns)
        try:
            return await _open_loop(client, paths, rate, read_source)
        finally:
            await client.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    result, achieved = asyncio.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
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


# --- wrk ------------------------------------------------------------------------------------


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(WRK_INSTALL_HINT)
    return path


def run_wrk(
    url: str,
    paths: Sequence[str],
    seconds: float,
    connections: int,
    threads: int,
    work_dir: Path,
    count_sources: bool = False,
) -> dict[str, Any]:
    """One wrk run; its figures plus its own CPU time (from wait4 on its process)."""
    script = work_dir / f"wrk-{os.getpid()}-{time.monotonic_ns()}.lua"
    script.write_text(wrk_script(paths, count_sources))
    command = [
        require_wrk(),
        f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", f"{REQUEST_TIMEOUT_S:g}s", "-s", str(script), url,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + seconds + 30  # bounded even if wrk hangs
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        output = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{output[-2000:]}")
    figures = parse_wrk(output)
    cpu_s = usage.ru_utime + usage.ru_stime
    return {
        **figures,
        "connections": connections,
        "threads": threads,
        "wrk_cpu_s": cpu_s,
        "wrk_cpu_us_per_request": cpu_s / figures["requests"] * 1e6
        if figures["requests"]
        else float("nan"),
    }


# --- The server under test ------------------------------------------------------------------


class ServerProcess:
    """`recsys serve` on 127.0.0.1 and a free port, in its own session; bounded waits."""

    def __init__(self, env: dict[str, str], workers: int, port: int, log_file: Path) -> None:
        self.env = env
        self.workers = workers
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "recsys", "serve",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers),
                ],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.base_url}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:300]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.2)
        log = self.log_file.read_text(errors="replace")[-3000:]
        raise BenchError(f"`recsys serve` did not become ready ({last}); its log:\n{log}")

    def cpu_s(self) -> float:
        """CPU seconds of the server and its worker processes so far."""
        if self.proc is None:
            return 0.0
        return sum(process_cpu_seconds(pid) for pid in process_tree(self.proc.pid))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def serving(env: dict[str, str], workers: int, log_dir: Path) -> Iterator[ServerProcess]:
    from infra.local.process import free_port

    server = ServerProcess(env, workers, free_port(), log_dir / "serve.log").start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- The whole run --------------------------------------------------------------------------


def seed_histories(redis_url: str, interactions: Any, keep: int) -> float:
    """Write for every user the state the stream worker would hold after their newest `keep`
    events (their recent history), so that every personalized request excludes the items the
    user has seen, as it does in production. Returns the mean history length."""
    import redis

    from recsys import keys
    from streams.user_state import HistoryEntry, UserState, push_history

    newest_first = interactions.sort_values("ts", ascending=False, kind="stable")
    lengths: list[int] = []
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for user, rows in newest_first.groupby("user_id", sort=False):
            recent = rows.head(keep)
            entries = [
                HistoryEntry(int(ts) * 1000, "view", str(item))
                for ts, item in zip(recent["ts"], recent["item_id"], strict=True)
            ]
            state = UserState(events=len(entries), last_event_ms=entries[0].ts_ms)
            state.history_raw = push_history(b"", entries, keep)
            fields = state.to_hash(int(time.time() * 1000))
            pipe.hset(
                keys.user_state(str(user)), items=[x for pair in fields.items() for x in pair]
            )
            lengths.append(len(entries))
        pipe.execute()
    finally:
        client.close()
    return float(np.mean(lengths)) if lengths else 0.0


@contextlib.contextmanager
def _cpu_meter(server: ServerProcess, redis_url: str) -> Iterator[dict[str, float]]:
    """CPU seconds the server and Redis used inside the block, and the wall time."""
    figures: dict[str, float] = {}
    server_before, redis_before = server.cpu_s(), redis_cpu_seconds(redis_url)
    started = time.perf_counter()
    yield figures
    figures["wall_s"] = time.perf_counter() - started
    figures["server_cpu_s"] = server.cpu_s() - server_before
    figures["redis_cpu_s"] = redis_cpu_seconds(redis_url) - redis_before


def run(settings: Any, config: ApiBenchConfig, data_dir: Path, work_dir: Path) -> dict[str, Any]:
    from batch.cli import train_and_publish
    from batch.datasets import load_dataset
    from recsys.benchmarks import service_env

    require_wrk()  # fail before minutes of set-up, not after
    load_before = os.getloadavg()
    published = train_and_publish(settings, "ml-100k", data_dir=data_dir)
    history_items = seed_histories(
        settings.redis_url,
        load_dataset("ml-100k", data_dir).interactions,
        settings.stream_history_length,
    )
    env = service_env(settings)
    users = [str(u) for u in range(1, ML100K_USERS + 1)]
    count = int(config.rate * config.seconds)
    recommend = recommend_paths(users, count, config.k, config.diversity, config.seed)
    live = ["/health/live"] * count
    results: dict[str, Any] = {}
    with serving(env, config.workers, work_dir) as server:
        host, port = "127.0.0.1", server.port
        # Warm-up at the fixed rate, not at saturation: every worker opens the shard and fills
        # its caches, and no overload-driven timeout leaves a breaker open for the timed runs.
        warm = recommend_paths(
            users,
            int(config.rate * config.warmup_seconds),
            config.k,
            config.diversity,
            config.seed + 1,
        )
        run_open_loop(host, port, warm, config.rate, False, config.max_connections)
        for name, paths, read_source in (("recommend", recommend, True), ("live", live, False)):
            with _cpu_meter(server, settings.redis_url) as cpu:
                fixed = run_open_loop(
                    host, port, paths, config.rate, read_source, config.max_connections
                )
            fixed["resources"] = cpu
            saturation_paths = paths if name == "live" else recommend[: len(users)]
            with _cpu_meter(server, settings.redis_url) as cpu:
                saturated = run_wrk(
                    server.base_url,
                    saturation_paths[:1] if name == "live" else saturation_paths,
                    config.saturation_seconds,
                    config.connections,
                    config.wrk_threads,
                    work_dir,
                    count_sources=name == "recommend",
                )
            saturated["resources"] = cpu
            results[name] = {"fixed_rate": fixed, "saturation": saturated}
    return {
        "benchmark": "api",
        "config": asdict(config),
        "model": {k: published.get(k) for k in ("version", "fit_seconds", "publish_seconds")},
        "users": len(users),
        "history_items_per_user": history_items,
        "mmr_candidates": settings.api_mmr_candidates,
        # Other work on the machine skews every figure: the 1/5/15-minute load averages.
        "load_average_before": load_before,
        **results,
    }


def run_with_local_services(
    config: ApiBenchConfig, data_dir: Path | None, use_running: bool
) -> dict[str, Any]:
    """Run against throwaway local services (or, with `use_running`, the configured ones:
    a new ml-100k model version is then published and made active there)."""
    from recsys.benchmarks import bench_services

    with bench_services(use_running, "recsys-bench-api-") as (settings, work_dir):
        return run(settings, config, data_dir or settings.data_dir, work_dir)
