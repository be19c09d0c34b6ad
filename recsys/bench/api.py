"""`recsys bench api`: latency at a fixed rate and throughput at saturation of the HTTP API.

Runs on real Redis and Kafka (throwaway local ones on free ports by default, or the configured
ones with --use-running), the embedded Qdrant engine and an ALS model trained on ml-100k and
published the way `recsys train` does. `recsys serve` runs as a subprocess on 127.0.0.1.

For GET /recommend/{user_id} (known users, k=10, MMR over the configured 100 candidates) and,
as the floor, GET /health/live:

1. Fixed rate (open loop, `recsys.bench.open_loop`): a small HTTP/1.1 client sends requests at
   scheduled times, whether or not earlier ones have answered, and measures each latency from its
   scheduled time, so queueing in the server is not hidden (no coordinated omission). It also
   reads every /recommend body and counts the `source` of each answer.
2. Saturation: `wrk` (closed loop, keep-alive connections) for a fixed time; its requests/s,
   and its latency percentiles as printed by a Lua `done()` hook.

The load generators' own CPU time is measured (getrusage for the Python client, wait4 for wrk),
and so is the server's and Redis's, since all of them share the machine's cores.

With `ranker` (`recsys bench api --ranker`) the model is published with its learned ranking stage
(`recsys train --ranker`), so /recommend answers from the two-stage path (`"source": "ranked"`);
after the runs above, the same /recommend runs are repeated on a fresh server started with
RECSYS_API_RANKER=off (the sources' own order) and kept under `ranker_off`. The impressions
comparison is then skipped (`"impressions": null`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core.settings import Settings
from infra.local.process import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    process_cpu_seconds,
    process_tree,
    sockets_by_process,
)
from recsys.bench.common import idle_wake_cost, redis_cpu_total, redis_node_urls, redis_topology
from recsys.bench.open_loop import REQUEST_TIMEOUT_S, run_open_loop
from recsys.bench.time_breakdown import breakdown
from recsys.processes import ChildProcess

WRK_INSTALL_HINT = (
    "`wrk` was not found on PATH; the saturation runs need it. Install it with "
    "`sudo apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)."
)
WRK_MARKER = "RECSYS_WRK "
ML100K_USERS = 943  # ml-100k's user ids are "1".."943"
READY_TIMEOUT_S = 60.0


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
    # Impressions on against off: alternating fixed-rate rounds on two servers (0: skipped).
    impression_rounds: int = 6
    impression_seconds: float = 15.0
    # Publish the model with its learned ranker, measure /recommend again on a server with it off
    # (RECSYS_API_RANKER=off), and skip the impressions comparison.
    ranker: bool = False


# --- Pure parts (unit-tested) ---------------------------------------------------------------


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


# Counts the top-level `source` and `reason` of each answer. The top-level `source` follows the
# items array, whose last item closes it with `}]`; each item has a `source` of its own too (in a
# ranked answer, the candidate source), which follows the item's `genres` array (`"]` or `[]`).
_WRK_RESPONSE_HOOK = """
response = function(status, headers, body)
  if status == 200 then
    local source = string.match(body, '%}%],"source":"(%a+)"')
      or string.match(body, '"items":%[%],"source":"(%a+)"') or "unreadable"
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


def share(counts: dict[str, int], key: str) -> float:
    total = sum(counts.values())
    return counts.get(key, 0) / total if total else float("nan")


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


class ServerProcess(ChildProcess):
    """`recsys serve` on 127.0.0.1 and a given port."""

    def __init__(self, env: dict[str, str], workers: int, port: int, log_file: Path) -> None:
        self.workers = workers
        self.port = port
        super().__init__(
            [
                sys.executable, "-m", "recsys", "serve",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            ],
            log_file,
            env,
        )  # fmt: skip

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def connections_per_worker(self) -> list[int]:
        """Established connections each worker holds now, fewest first. The workers are the
        processes that share the listening socket, less the supervisor that opened it."""
        if self.proc is None:
            return []
        tree = process_tree(self.proc.pid)
        listening = sockets_by_process(tree, self.port, TCP_LISTEN)
        workers = [p for p, held in listening.items() if held and p != self.proc.pid]
        counts = sockets_by_process(workers or [self.proc.pid], self.port, TCP_ESTABLISHED)
        return sorted(counts.values())


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


def seed_histories(settings: Settings, interactions: Any, keep: int) -> float:
    """Write for every user the state the stream worker would hold after their newest `keep`
    events (their recent history), so that every personalized request excludes the items the
    user has seen, as it does in production. Returns the mean history length."""
    import redis

    from core import keys
    from core.user_state import HistoryEntry, UserState

    newest_first = interactions.sort_values("ts", ascending=False, kind="stable")
    lengths: list[int] = []
    client: Any = (
        redis.RedisCluster.from_url(settings.redis_url)
        if settings.redis_cluster
        else redis.Redis.from_url(settings.redis_url)
    )
    try:
        pipe = client.pipeline(transaction=False)
        for user, rows in newest_first.groupby("user_id", sort=False):
            recent = rows.head(keep)
            entries = [
                HistoryEntry(int(ts) * 1000, "view", str(item))
                for ts, item in zip(recent["ts"], recent["item_id"], strict=True)
            ]
            state = UserState(events=len(entries), last_event_ms=entries[0].ts_ms)
            state.recent = state.recent.push(entries, keep)
            pipe.set(keys.user_state(str(user)), state.encode(int(time.time() * 1000)))
            lengths.append(len(entries))
        pipe.execute()
    finally:
        client.close()
    return float(np.mean(lengths)) if lengths else 0.0


@contextlib.contextmanager
def _cpu_meter(server: ServerProcess, redis_urls: list[str]) -> Iterator[dict[str, float]]:
    """CPU seconds the server and Redis (every node of a cluster) used inside the block, and the
    wall time."""
    figures: dict[str, float] = {}
    server_before, redis_before = server.cpu_s(), redis_cpu_total(redis_urls)
    started = time.perf_counter()
    yield figures
    figures["wall_s"] = time.perf_counter() - started
    figures["server_cpu_s"] = server.cpu_s() - server_before
    figures["redis_cpu_s"] = redis_cpu_total(redis_urls) - redis_before


_IMPRESSION_SERIES = re.compile(
    r'^recsys_api_impressions_(sent|dropped)_total(?:\{reason="(\w+)"\})? (\S+)$', re.MULTILINE
)


def impression_counts(metrics_text: str) -> dict[str, float]:
    """Impressions sent, and dropped by reason, from a server's /metrics text."""
    counts: dict[str, float] = {}
    for kind, reason, value in _IMPRESSION_SERIES.findall(metrics_text):
        name = kind if kind == "sent" else f"dropped_{reason}"
        counts[name] = counts.get(name, 0.0) + float(value)
    return counts


def _impressions_side_by_side(
    env: dict[str, str], config: ApiBenchConfig, work_dir: Path, users: list[str]
) -> dict[str, Any]:
    """/recommend p50 at the fixed rate with impressions recorded and with none
    (RECSYS_API_IMPRESSIONS_SAMPLE=0): two fresh servers side by side, the same requests in
    alternating rounds, each round's order swapped, so drift of the machine's speed falls on
    both alike."""
    count = int(config.rate * config.impression_seconds)
    rounds: list[dict[str, Any]] = []
    folders = {mode: work_dir / f"impressions-{mode}" for mode in ("on", "off")}
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    silent_env = env | {"RECSYS_API_IMPRESSIONS_SAMPLE": "0"}
    with (
        serving(env, config.workers, folders["on"]) as recording,
        serving(silent_env, config.workers, folders["off"]) as silent,
    ):
        warm = recommend_paths(users, count // 3, config.k, config.diversity, config.seed + 2)
        for server in (recording, silent):
            run_open_loop(
                "127.0.0.1", server.port, warm, config.rate, False, config.max_connections
            )
        before = impression_counts(_metrics_text(recording))
        for n in range(config.impression_rounds):
            paths = recommend_paths(users, count, config.k, config.diversity, config.seed + 10 + n)
            pair = [("off", silent), ("on", recording)]
            for mode, server in pair if n % 2 == 0 else reversed(pair):
                fixed = run_open_loop(
                    "127.0.0.1", server.port, paths, config.rate, False, config.max_connections
                )
                rounds.append(
                    {
                        "round": n,
                        "impressions": mode,
                        "answered": fixed["answered"],
                        "achieved_rate": fixed["achieved_rate"],
                        "latency_ms": fixed["latency_ms"],
                    }
                )
        after = impression_counts(_metrics_text(recording))
    p50 = {
        mode: float(np.median([r["latency_ms"]["p50"] for r in rounds if r["impressions"] == mode]))
        for mode in ("on", "off")
    }
    return {
        "rounds": rounds,
        "p50_ms": p50,
        "p50_delta_ms": p50["on"] - p50["off"],
        "recorded": {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after},
        "requests_with_impressions": count * config.impression_rounds,
    }


class _Route(NamedTuple):
    """One route under test: its fixed-rate requests, the ones wrk cycles through, and whether
    the answers' bodies are read (for their `source`)."""

    paths: list[str]
    saturation_paths: list[str]
    read_bodies: bool


def _measure(
    server: ServerProcess,
    routes: dict[str, _Route],
    warm: list[str],
    config: ApiBenchConfig,
    redis_urls: list[str],
    work_dir: Path,
) -> dict[str, Any]:
    """On one running server: a warm-up at the fixed rate, then for each route a fixed-rate run
    (open loop) and a saturation run (wrk), each with the CPU the server and Redis spent."""
    host, port = "127.0.0.1", server.port
    run_open_loop(host, port, warm, config.rate, False, config.max_connections)
    results: dict[str, Any] = {}
    for name, route in routes.items():
        metrics_before = _metrics_text(server)
        with _cpu_meter(server, redis_urls) as cpu:
            fixed = run_open_loop(
                host, port, route.paths, config.rate, route.read_bodies, config.max_connections
            )
        fixed["resources"] = cpu
        if name == "recommend":
            fixed["time_breakdown"] = breakdown(metrics_before, _metrics_text(server))
        # How the kernel spread wrk's connections over the workers, halfway through: a worker
        # holding most of them caps the rate at about one core's worth.
        split: list[list[int]] = []
        sampler = threading.Timer(
            config.saturation_seconds / 2,
            lambda found=split: found.append(server.connections_per_worker()),
        )
        sampler.start()
        with _cpu_meter(server, redis_urls) as cpu:
            saturated = run_wrk(
                server.base_url,
                route.saturation_paths,
                config.saturation_seconds,
                config.connections,
                config.wrk_threads,
                work_dir,
                count_sources=route.read_bodies,
            )
        sampler.join()
        saturated["resources"] = cpu
        saturated["connections_per_worker"] = split[0] if split else None
        results[name] = {"fixed_rate": fixed, "saturation": saturated}
    return results


def _metrics_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def run(
    settings: Settings, config: ApiBenchConfig, data_dir: Path, work_dir: Path
) -> dict[str, Any]:
    from batch.datasets import load_dataset
    from batch.train import train_and_publish
    from recsys.bench.common import service_env

    require_wrk()  # fail before minutes of set-up, not after
    load_before = os.getloadavg()
    published = train_and_publish(settings, "ml-100k", data_dir=data_dir, ranker=config.ranker)
    redis_urls = redis_node_urls(settings)
    history_items = seed_histories(
        settings,
        load_dataset("ml-100k", data_dir).interactions,
        settings.stream_history_length,
    )
    env = service_env(settings, RECSYS_API_RANKER="on")
    users = [str(u) for u in range(1, ML100K_USERS + 1)]
    count = int(config.rate * config.seconds)
    recommend = recommend_paths(users, count, config.k, config.diversity, config.seed)
    live = ["/health/live"] * count
    routes = {
        "recommend": _Route(recommend, recommend[: len(users)], read_bodies=True),
        "live": _Route(live, live[:1], read_bodies=False),
    }
    # Warm-up at the fixed rate, not at saturation: every worker opens the shard and fills its
    # caches, and no overload-driven timeout leaves a breaker open for the timed runs.
    warm = recommend_paths(
        users, int(config.rate * config.warmup_seconds), config.k, config.diversity, config.seed + 1
    )
    idle_wake = {"before": idle_wake_cost()}
    with serving(env, config.workers, work_dir) as server:
        results: dict[str, Any] = _measure(server, routes, warm, config, redis_urls, work_dir)
    if config.ranker:
        # The same /recommend requests on a fresh server that keeps the sources' order.
        off_dir = work_dir / "ranker-off"
        off_dir.mkdir(exist_ok=True)
        off_env = env | {"RECSYS_API_RANKER": "off"}
        with serving(off_env, config.workers, off_dir) as server:
            only_recommend = {"recommend": routes["recommend"]}
            off = _measure(server, only_recommend, warm, config, redis_urls, off_dir)
        results["ranker_off"] = off["recommend"]
        results["impressions"] = None  # skipped: the comparison is of the ranker, not of Kafka
    elif config.impression_rounds:
        results["impressions"] = _impressions_side_by_side(env, config, work_dir, users)
    idle_wake["after"] = idle_wake_cost()
    model_keys = ["version", "fit_seconds", "publish_seconds"] + (
        ["ranker"] if config.ranker else []
    )
    return {
        "benchmark": "api",
        "redis": redis_topology(settings),
        "config": asdict(config),
        "model": {k: published.get(k) for k in model_keys},
        "users": len(users),
        "history_items_per_user": history_items,
        "mmr_candidates": settings.api_mmr_candidates,
        # Other work on the machine skews every figure: the 1/5/15-minute load averages.
        "load_average_before": load_before,
        # How much slower this machine ran the same work after 5 ms idle, before and after the
        # runs: the fixed-rate latencies depend on it (see `recsys.bench.common.idle_wake_cost`).
        "idle_wake_cost": idle_wake,
        **results,
    }


def run_with_local_services(
    config: ApiBenchConfig,
    data_dir: Path | None,
    use_running: bool,
    redis_cluster: int | None = None,
) -> dict[str, Any]:
    """Run against throwaway local services (with `redis_cluster`, a Redis Cluster of that many
    masters), or, with `use_running`, the configured ones: a new ml-100k model version is then
    published and made active there."""
    from recsys.bench.common import bench_services

    with bench_services(use_running, "recsys-bench-api-", redis_cluster) as (settings, work_dir):
        return run(settings, config, data_dir or settings.data_dir, work_dir)
