"""`recsys bench soak`: the whole local stack under steady mixed load for a bounded time.

Throwaway local Kafka and Redis; a model trained on a synthetic dataset and published; one
`recsys worker`, `recsys serve` (2 workers, impressions recorded), `recsys archive run` and
`recsys simulate` (the events) as separate processes. This process is the load client:

- GET /recommend at a fixed rate through the open-loop client (`recsys.bench.open_loop`), one
  run per sample window, so each window has its own p50/p99 and its own 5xx and failures;
- freshness probes: a purchase of a brand-new user, then GET /recommend for that user until
  the answer is personalized (as `recsys bench freshness` does), one after another;
- after each window, a sample: RSS and open file descriptors of every process, Redis
  `used_memory` and the worker's consumer lag (end offsets less its group's committed ones).

With `faults`, faults are injected at even spacing over the measured period (after the
warm-up): kill -9 of one API worker (uvicorn's supervisor replaces it); kill -9 of the stream
worker with a new one started at once; the Kafka broker stopped for 10 s; Redis (its
append-only file on, as it is for the whole run then) stopped and started again; the archive's
directory read-only for 30 s. At the end the simulator has stopped, the worker drains to lag 0,
every event topic is read back from the start (distinct event ids per user) and compared with
the worker's per-user counter in Redis, and with the archive's rows per user: exactly once, per
user, in both.
The faults are `recsys.bench.soak_faults`'s; the criteria and the report
`recsys.bench.soak_report`'s.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson

from core.settings import Settings
from infra.local.process import process_tree
from recsys.bench.api import ServerProcess, recommend_paths
from recsys.bench.soak_faults import maybe, run_faults, wait_for
from recsys.processes import ArchiverProcess, ChildProcess, WorkerProcess

DATASET = "synthetic:users=5000,items=2000,events=200000,seed=0"
# BENCHMARKS.md's saturation figures (each with the whole machine to itself).
API_SATURATION = 1_330  # GET /recommend, 2 workers
STREAM_SATURATION = 9_500  # one stream worker, events/s
POLL_S = 0.005
PROBE_TIMEOUT_S = 10.0
ARCHIVE_CATCH_UP_S = 300.0  # after the drain, for the archiver to hold every published event
T = TypeVar("T")


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 60.0
    warmup_minutes: float = 10.0  # at most a quarter of the run
    request_rate: int = 300  # GET /recommend per second
    event_rate: int = 1_000  # `recsys simulate --rate`
    users: int = 5_000  # simulated users; the requests ask for them too
    interval_s: float = 5.0  # one sample (and one open-loop run) per interval
    probe_interval_s: float = 1.0
    api_workers: int = 2
    faults: bool = False
    k: int = 10
    diversity: float = 0.8
    max_connections: int = 64
    drain_timeout_s: float = 300.0
    seed: int = 0

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    @property
    def warmup_s(self) -> float:
        return min(self.warmup_minutes * 60, self.seconds / 4)


# --- One process's resources -------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid` (VmRSS), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# --- The stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """The processes under test; a fault may replace `worker`."""

    settings: Settings
    env: dict[str, str]
    work_dir: Path
    group_id: str
    server: ServerProcess
    worker: WorkerProcess
    archiver: ArchiverProcess
    simulator: ChildProcess
    service_pids: dict[str, int] = field(default_factory=dict)  # kafka, redis
    services: Any = None  # the LocalServices the faults stop and start

    def track(self, service: str, pid: int | None) -> None:
        """Sample `service` (restarted by a fault) under its new pid."""
        if pid is not None:
            self.service_pids[service] = pid

    def api_workers(self) -> list[int]:
        return [
            pid
            for pid in process_tree(self.server.pid)[1:]
            if "resource_tracker" not in _cmdline(pid)
        ]

    def processes(self) -> dict[str, int]:
        """Every process to sample, by a label that names its role and pid."""
        found: dict[str, int] = {}

        def add(role: str, pid: int) -> None:
            found[f"{role} {pid}"] = pid

        add("api supervisor", self.server.pid)
        for pid in process_tree(self.server.pid)[1:]:
            add(
                "api resource tracker" if "resource_tracker" in _cmdline(pid) else "api worker", pid
            )
        for role, child in (
            ("stream worker", self.worker),
            ("archiver", self.archiver),
            ("simulator", self.simulator),
        ):
            if child.alive:
                tree = process_tree(child.pid)
                add(role, tree[0])
                for pid in tree[1:]:
                    add(f"{role} child", pid)
        for role, pid in self.service_pids.items():
            add(role, pid)
        add("load client", os.getpid())
        return found


class Background:
    """An asyncio loop on a thread of its own: the probes, the lag reader and the checks run
    there while the open-loop client paces requests on the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class LagReader:
    """The worker group's consumer lag: end offsets less committed offsets, summed over the
    partitions of the topics it reads (a partition without a commit counts from 0). Created
    on the loop that uses it (aiokafka's clients bind to the running loop)."""

    def __init__(self, settings: Settings, group_id: str, admin: Any, consumer: Any) -> None:
        from aiokafka import TopicPartition

        from schemas import EVENT_TOPICS
        from schemas.topics import IMPRESSION_TOPIC

        self.group_id = group_id
        self.admin = admin
        self.consumer = consumer
        self.partitions = [
            TopicPartition(topic, p)
            for topic in (*EVENT_TOPICS, IMPRESSION_TOPIC)
            for p in range(settings.kafka_partitions)
        ]

    @classmethod
    async def start(cls, settings: Settings, group_id: str) -> LagReader:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from core.clients import kafka_common

        admin = AIOKafkaAdminClient(**kafka_common(settings))
        consumer = AIOKafkaConsumer(**kafka_common(settings), enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        return cls(settings, group_id, admin, consumer)

    async def lag(self) -> int:
        committed = await self.admin.list_consumer_group_offsets(self.group_id)
        end = await self.consumer.end_offsets(self.partitions)
        lag = 0
        for tp in self.partitions:
            done = committed[tp].offset if tp in committed else 0
            lag += max(0, end[tp] - max(done, 0))
        return lag

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()


# --- Freshness probes --------------------------------------------------------------------------


async def probe_loop(
    settings: Settings,
    base_url: str,
    every_s: float,
    clock: Callable[[], float],
    results: list[tuple[float, float | None]],
) -> None:
    """Until cancelled: a purchase for a new user, then GET /recommend for them until the answer
    is personalized; (end time, seconds or None for a timeout) appended to `results`."""
    from core.clients import kafka_producer, redis_client
    from recsys.simulator import load_catalog
    from schemas import encode_event, event_key, new_event, topic_for

    redis = redis_client(settings)
    try:
        items = (await load_catalog(redis)).item_ids[:200]
    finally:
        await redis.aclose()
    producer = kafka_producer(settings, linger_ms=0)
    await producer.start()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            n = 0
            while True:
                began = time.perf_counter()
                user = f"probe-{uuid.uuid4().hex[:10]}"
                event = new_event("purchase", user, items[n % len(items)])
                try:
                    await producer.send_and_wait(
                        topic_for(event.event_type), encode_event(event), key=event_key(event)
                    )
                except Exception:  # the broker stopped by a fault: a timed-out probe, not a crash
                    found = None
                else:
                    found = await _personalized_within(client, user, began)
                results.append((clock(), found))
                n += 1
                await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - began)))
    finally:
        await producer.stop()


async def _personalized_within(client: httpx.AsyncClient, user: str, began: float) -> float | None:
    while time.perf_counter() - began < PROBE_TIMEOUT_S:
        try:
            response = await client.get(f"/recommend/{user}", params={"k": 10})
            if response.status_code == 200 and response.json()["source"] == "personalized":
                return time.perf_counter() - began
        except httpx.HTTPError:
            pass  # a fault's refused connection: the probe goes on until its timeout
        await asyncio.sleep(POLL_S)
    return None


# --- One sample --------------------------------------------------------------------------------


def _window_requests(window: dict[str, Any]) -> dict[str, int]:
    statuses = {int(k): v for k, v in window["statuses"].items()}
    return {
        "sent": window["requests"],
        "answered": window["answered"],
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "failed": sum(window["errors"].values()),
        "errors": dict(window["errors"]),  # by kind: refused, reset, timeout, unfinished
    }


def _freshness(probes: list[tuple[float, float | None]]) -> dict[str, Any]:
    seen = [s * 1000 for _, s in probes if s is not None]
    summary: dict[str, Any] = {"n": len(probes), "timeouts": len(probes) - len(seen)}
    if seen:
        p50, p99 = np.percentile(seen, [50, 99])
        summary |= {"p50": float(p50), "p99": float(p99)}
    return summary


def take_sample(
    stack: Stack,
    t_s: float,
    window: dict[str, Any],
    probes: list[tuple[float, float | None]],
    redis_memory: Callable[[], int | None],
    lag: Callable[[], int | None],
) -> dict[str, Any]:
    rss: dict[str, int] = {}
    fds: dict[str, int] = {}
    for label, pid in stack.processes().items():
        if (resident := rss_bytes(pid)) is not None:
            rss[label] = resident
        if (count := open_fds(pid)) is not None:
            fds[label] = count
    return {
        "t_s": t_s,
        "rss_bytes": rss,
        "fds": fds,
        "redis_used_memory": redis_memory(),
        "kafka_lag": lag(),
        "requests": _window_requests(window),
        "latency_ms": {
            k: window["latency_ms"][k] for k in ("p50", "p99") if k in window["latency_ms"]
        },
        "freshness_ms": _freshness(probes),
    }


# --- Exactly once ------------------------------------------------------------------------------


async def published_per_user(settings: Settings) -> tuple[dict[str, int], int]:
    """Distinct event ids per user on every event topic, read from the start to the end
    offsets; and how many messages repeated an id already seen (a producer's retry)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from core.clients import kafka_common
    from schemas import EVENT_TOPICS

    consumer = AIOKafkaConsumer(**kafka_common(settings), enable_auto_commit=False)
    await consumer.start()
    users: dict[str, int] = {}
    user_index, id_hashes = array("l"), array("q")
    try:
        partitions = [
            TopicPartition(t, p) for t in EVENT_TOPICS for p in range(settings.kafka_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=20_000)
            for messages in batches.values():
                for message in messages:
                    user = (message.key or b"").decode()
                    user_index.append(users.setdefault(user, len(users)))
                    id_hashes.append(hash(orjson.loads(message.value)["event_id"]))
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    hashes = np.frombuffer(id_hashes, dtype=np.int64)
    _, first = np.unique(hashes, return_index=True)
    counts = np.bincount(np.frombuffer(user_index, dtype=np.int64)[first], minlength=len(users))
    names = list(users)
    return {names[i]: int(c) for i, c in enumerate(counts)}, len(hashes) - len(first)


async def active_version_of(settings: Settings) -> str | None:
    from core.clients import redis_client_for
    from core.model_version import active_version

    redis = redis_client_for(settings)
    try:
        return await active_version(redis)
    finally:
        await redis.aclose()


def archived_per_user(
    location: str, want: int, timeout_s: float = ARCHIVE_CATCH_UP_S
) -> dict[str, Any]:
    """The archive's rows of the event topics: distinct event ids per user and rows that repeat
    an id, read once it holds `want` rows (the events published) or after `timeout_s`."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from schemas import EVENT_TOPICS

    events = pc.field("topic").isin(list(EVENT_TOPICS))
    deadline = time.monotonic() + timeout_s
    while True:
        dataset = DeltaTable(location).to_pyarrow_dataset()
        if dataset.count_rows(filter=events) >= want or time.monotonic() > deadline:
            break
        time.sleep(5)
    rows = dataset.to_table(columns=["user_id", "event_id"], filter=events)
    per_user = rows.group_by("user_id").aggregate([("event_id", "count_distinct")])
    users = per_user.column("user_id").to_pylist()
    counts = per_user.column("event_id_count_distinct").to_pylist()
    distinct = pc.count_distinct(rows.column("event_id")).as_py()
    return {
        "per_user": dict(zip(users, counts, strict=True)),
        "duplicate_rows": rows.num_rows - distinct,
    }


async def applied_per_user(settings: Settings, users: list[str]) -> dict[str, int]:
    """The worker's per-user counter of applied events (`UserState.events`)."""
    from core import keys
    from core.clients import redis_client_for
    from core.user_state import load_states

    redis = redis_client_for(settings)
    applied: dict[str, int] = {}
    try:
        for start in range(0, len(users), 1000):
            chunk = users[start : start + 1000]
            states = await load_states(redis, [keys.user_state(u) for u in chunk])
            applied |= {u: s.events for u, s in zip(chunk, states, strict=True) if s}
    finally:
        await redis.aclose()
    return applied


# --- The run -----------------------------------------------------------------------------------


@contextmanager
def _stack(settings: Settings, config: SoakConfig, work_dir: Path) -> Iterator[Stack]:
    from infra.local.services import LocalServices
    from recsys.bench.api import serving
    from recsys.bench.common import service_env

    env = service_env(settings, COLUMNS="200")
    group_id = f"soak-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(settings, work_dir, group_id, env=env).start()
    archiver = ArchiverProcess(settings, work_dir).start()
    simulator = ChildProcess(
        [
            sys.executable,
            "-m",
            "recsys",
            "simulate",
            "--rate",
            str(config.event_rate),
            "--duration",
            f"{config.seconds:.0f}",
            "--users",
            str(config.users),
            "--seed",
            str(config.seed),
        ],
        work_dir / "simulate.log",
        env,
    )
    # The services bench_services started (the same homes and ports), for the faults to stop
    # and start; Redis keeps its append-only file when there are faults.
    services = LocalServices.from_settings(settings, redis_appendonly=config.faults)
    pids = {"kafka": services.kafka.process.pid(), "redis": services.redis.process.pid()}
    try:
        with serving(env, config.api_workers, work_dir) as server:
            wait_for(lambda: worker.readiness()[0] == 200, 120, 0.5)
            stack = Stack(
                settings,
                env,
                work_dir,
                group_id,
                server,
                worker,
                archiver,
                simulator.start(),
                {k: v for k, v in pids.items() if v},
                services,
            )
            try:
                yield stack
            finally:
                stack.simulator.stop()
                stack.worker.stop()
    finally:
        worker.stop()
        archiver.stop()


def _load_windows(
    stack: Stack,
    config: SoakConfig,
    clock: Callable[[], float],
    background: Background,
    lag: LagReader,
    probes: list[tuple[float, float | None]],
    on_progress: Callable[[float], None],
) -> list[dict[str, Any]]:
    import redis

    from recsys.bench.open_loop import run_open_loop

    users = [f"sim-u{n}" for n in range(config.users)]
    per_window = max(1, int(config.request_rate * config.interval_s))
    client = redis.Redis.from_url(stack.settings.redis_url)
    samples: list[dict[str, Any]] = []
    seen_probes = 0
    try:
        n = 0
        while clock() < config.seconds:
            paths = recommend_paths(users, per_window, config.k, config.diversity, config.seed + n)
            window = run_open_loop(
                "127.0.0.1",
                stack.server.port,
                paths,
                config.request_rate,
                False,
                config.max_connections,
            )
            fresh, seen_probes = probes[seen_probes:], len(probes)
            samples.append(
                take_sample(
                    stack,
                    clock(),
                    window,
                    fresh,
                    lambda: maybe(lambda: int(client.info("memory")["used_memory"])),
                    lambda: maybe(lambda: background.run(lag.lag(), 30)),
                )
            )
            on_progress(clock())
            n += 1
    finally:
        client.close()
    return samples


def _simulator_summary(log: Path) -> dict[str, Any]:
    """The simulator's closing line: "sent N events in S s (R events/s), E errors"."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"sent ([\d,]+) events in ([\d.]+) s .*?([\d,]+) errors", text)
    if not found:
        return {"line": "no summary: " + text[-300:], "sent": 0, "seconds": 0.0, "errors": 0}
    sent, seconds, errors = found[-1]
    return {
        "sent": int(sent.replace(",", "")),
        "seconds": float(seconds),
        "errors": int(errors.replace(",", "")),
    }


def _drain(background: Background, lag: LagReader, timeout_s: float) -> float | None:
    started = time.monotonic()
    if wait_for(lambda: background.run(lag.lag(), 30) == 0, timeout_s, 1.0):
        return time.monotonic() - started
    return None


def run(
    settings: Settings,
    config: SoakConfig,
    work_dir: Path,
    on_progress: Callable[[float], None] = lambda _: None,
) -> dict[str, Any]:
    from batch.train import train_and_publish
    from recsys.bench.common import percentiles
    from recsys.bench.soak_report import evaluate, requests_around

    load_before = os.getloadavg()
    model = train_and_publish(settings, DATASET, data_dir=work_dir / "data")
    background = Background()
    probes: list[tuple[float, float | None]] = []
    faults: list[dict[str, Any]] = []
    try:
        with _stack(settings, config, work_dir) as stack:
            lag = background.run(LagReader.start(settings, stack.group_id))
            started = time.monotonic()

            def clock() -> float:
                return time.monotonic() - started

            prober = asyncio.run_coroutine_threadsafe(
                probe_loop(settings, stack.server.base_url, config.probe_interval_s, clock, probes),
                background.loop,
            )
            injector = None
            if config.faults:
                injector = threading.Thread(
                    target=run_faults,
                    args=(
                        stack,
                        config,
                        clock,
                        lambda: background.run(lag.lag(), 30),
                        lambda: background.run(active_version_of(settings), 30),
                        faults,
                    ),
                    daemon=True,
                )
                injector.start()
            samples = _load_windows(stack, config, clock, background, lag, probes, on_progress)
            seconds = clock()
            prober.cancel()
            if injector is not None:
                injector.join(timeout=300)
            wait_for(lambda: not stack.simulator.alive, 120, 0.5)
            drained_s = _drain(background, lag, config.drain_timeout_s)
            published, kafka_repeats = background.run(published_per_user(settings), 900)
            applied = background.run(applied_per_user(settings, list(published)), 300)
            archived = archived_per_user(settings.archive_location, sum(published.values()))
            background.run(lag.stop())
            simulated = _simulator_summary(work_dir / "simulate.log")
    finally:
        background.close()
    verdict = evaluate(
        samples, faults, published, applied, config.warmup_s, config.interval_s, archived
    )
    once = verdict["exactly_once"]
    for fault in faults:
        if fault.get("run"):
            fault["lost"], fault["doubled"] = once["lost"], once["doubled"]
            end = fault["at_s"] + (fault.get("recovery_s") or 0.0)
            fault["requests"] = requests_around(samples, fault["at_s"], end, config.interval_s)
    measured = [s for s in samples if s["t_s"] >= config.warmup_s]
    redis_mb = [s["redis_used_memory"] / 2**20 for s in measured if s["redis_used_memory"]]
    seen = [s for _, s in probes if s is not None]
    return {
        "benchmark": "soak",
        "config": asdict(config),
        "dataset": DATASET,
        "model_version": model["version"],
        "load_average_before": load_before,
        "seconds": seconds,
        "warmup_s": config.warmup_s,
        "rates": {
            "requests_per_s": sum(s["requests"]["sent"] for s in samples) / seconds,
            "events_per_s": simulated["sent"] / simulated["seconds"] if simulated["seconds"] else 0,
            "probes": len(probes),
            "api_saturation": API_SATURATION,
            "stream_saturation": STREAM_SATURATION,
        },
        "simulator": simulated,
        "freshness_s": percentiles(seen) | {"timeouts": len(probes) - len(seen)},
        "drained_after_s": drained_s,
        "kafka_repeated_event_ids": kafka_repeats,
        "redis_memory_mb": {
            "first": redis_mb[0] if redis_mb else None,
            "last": redis_mb[-1] if redis_mb else None,
        },
        "faults": faults,
        "verdict": verdict,
        "samples": samples,
    }


def run_with_local_services(
    config: SoakConfig, on_progress: Callable[[float], None] = lambda _: None
) -> dict[str, Any]:
    from recsys.bench.common import bench_services

    # With faults, Redis keeps an append-only file from the start, so that its restart keeps
    # the data (the fault: "restart Redis with its append-only file on").
    with bench_services(False, "recsys-bench-soak-", redis_appendonly=config.faults) as (
        settings,
        work_dir,
    ):
        return run(settings, config, work_dir, on_progress)
