"""`recsys bench stream`: throughput, freshness and Redis memory of one stream worker process.

Runs on real Kafka and Redis: throwaway local ones on free ports (default), or the configured
ones with --use-running. The model is a published version with random 64-dim item vectors:
the worker's cost does not depend on what the vectors mean.

1. Throughput: N events are published first; one worker process then drains them. The rate is
   applied events / time from its first to its last applied event (read from its /metrics).
2. Freshness: with the worker caught up, events are published at a fixed rate, each for a new
   user; Redis keyspace notifications tell when each user's state is written. Freshness is
   that moment minus the moment just before the event was sent.
3. Memory: MEMORY USAGE of the per-user keys of a sample of the users from step 1.
   Meanwhile the CPU time of the worker, Redis and Kafka is read (/proc, INFO cpu), per
   applied event: all three share the machine's cores.
4. Faust's own ceiling: the same backlog drained by the worker's agent with a processor that
   applies nothing (`recsys.bench.noop_drain`), in a consumer group of its own; with its CPU time
   per event.
5. Throughput vs offered rate: short fixed-rate runs like step 2 at rising rates; the applied
   rate is the events observed over the time from the first send to the last state write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import redis.asyncio as aioredis

from batch.publish import ModelArtifacts, publish
from core import keys
from core.clients import (
    RedisClient,
    ensure_topics,
    flush_everywhere,
    kafka_producer,
    redis_client_for,
)
from core.model_version import as_bytes
from core.settings import Settings
from core.user_state import UserState
from core.vectors.edge import EdgeVectorIndex
from infra.local.process import process_cpu_seconds, process_tree
from recsys.bench.common import (
    bench_services,
    percentiles,
    redis_cpu_seconds,
    redis_cpu_total,
    redis_node_urls,
    redis_topology,
    service_env,
)
from recsys.processes import WorkerProcess
from schemas import POSITIVE_EVENT_TYPES, encode_event, event_key, new_event, topic_for

DIM = 64
_APPLIED = re.compile(r'^recsys_stream_events_total\{[^}]*outcome="applied"[^}]*\} (\S+)$', re.M)


@dataclass(frozen=True)
class StreamBenchConfig:
    events: int = 200_000
    users: int = 20_000
    items: int = 10_000
    freshness_rate: int = 1_000
    freshness_seconds: float = 30.0
    faust_ceiling: bool = True  # step 4, which no Redis figure depends on
    # Throughput vs offered rate: short fixed-rate runs, each event for a new user.
    sweep_rates: tuple[int, ...] = (1_000, 2_000, 4_000, 6_000, 8_000, 10_000)
    sweep_seconds: float = 8.0
    memory_sample: int = 2_000
    seed: int = 0
    transitions_top_n: int = 50  # the worker's RECSYS_STREAM_TRANSITIONS_TOP_N (its default)


def _training_like(config: StreamBenchConfig, events: int = 50_000) -> pd.DataFrame:
    """Training rows drawn as the backlog is (`_produce_backlog`): what the version's drift
    baseline describes, so that the worker feeds its drift windows as a deployed one does."""
    rng = np.random.default_rng(config.seed + 2)
    return pd.DataFrame(
        {
            "user_idx": rng.integers(config.users // 2, size=events),
            "item_idx": np.minimum(rng.zipf(1.3, size=events) - 1, config.items - 1),
            "ts": np.sort(rng.integers(0, 86_400, size=events)),
            "event_type": rng.choice(list(POSITIVE_EVENT_TYPES), size=events, p=[0.8, 0.15, 0.05]),
        }
    )


async def _publish_model(redis: RedisClient, config: StreamBenchConfig, state_dir: Path) -> str:
    from batch.drift_baseline import training_baseline

    rng = np.random.default_rng(config.seed)
    item_ids = np.array([f"i{i}" for i in range(config.items)])
    user_vectors = rng.standard_normal((config.users // 2, DIM)).astype(np.float32)
    item_vectors = rng.standard_normal((config.items, DIM)).astype(np.float32)
    payloads: list[dict[str, Any]] = [
        {"title": f"Item {i}", "genres": [f"g{i % 18}"], "year": None} for i in range(config.items)
    ]
    rows = _training_like(config)
    popularity = np.bincount(rows["item_idx"], minlength=config.items)
    artifacts = ModelArtifacts(
        model="als",
        dataset="bench-random",
        user_ids=np.array([f"u{i}" for i in range(config.users // 2)]),  # half known, half new
        item_ids=item_ids,
        user_vectors=user_vectors,
        item_vectors=item_vectors,
        item_payloads=payloads,
        popularity=popularity.astype(np.int64),
        trained_until=0,
        params={"alpha": 10.0, "regularization": 0.05},
        drift_baseline=training_baseline(
            rows, popularity, user_vectors, item_vectors, None, [p["genres"] for p in payloads]
        ),
    )
    index = EdgeVectorIndex(state_dir / "qdrant")
    version = await publish(artifacts, index, redis, state_dir / "models")
    await index.close()
    return version


def _directory_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


async def _item_memory(
    redis: RedisClient, version: str, items: int, qdrant_dir: Path
) -> dict[str, float]:
    """Bytes per item of a published version: Redis's accounting of its item vectors and
    payloads (MEMORY USAGE), and the size on disk of the vector index's shard (vectors, HNSW
    graph and payloads, which the engine maps into memory)."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in (keys.item_vectors(version), keys.item_payloads(version)):
            pipe.memory_usage(key, samples=0)
        vectors, payloads = await pipe.execute()
    on_disk = _directory_bytes(qdrant_dir)
    return {
        "redis_vectors": int(vectors or 0) / items,
        "redis_payloads": int(payloads or 0) / items,
        "vector_index_on_disk": on_disk / items,
    }


async def _produce_backlog(settings: Settings, config: StreamBenchConfig) -> float:
    """Publish the throughput run's events; returns the producer's own rate (events/s)."""
    rng = np.random.default_rng(config.seed + 1)
    users = rng.integers(config.users, size=config.events)
    # Zipf-like item popularity, clipped to the catalog.
    items = np.minimum(rng.zipf(1.3, size=config.events) - 1, config.items - 1)
    kinds = rng.choice(len(POSITIVE_EVENT_TYPES), size=config.events, p=[0.8, 0.15, 0.05])
    producer = kafka_producer(settings, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        now = datetime.now(UTC)
        for n in range(config.events):
            event = new_event(
                POSITIVE_EVENT_TYPES[kinds[n]], f"u{users[n]}", f"i{items[n]}", ts=now
            )
            await producer.send(
                topic_for(event.event_type), encode_event(event), key=event_key(event)
            )
        await producer.flush()
    finally:
        await producer.stop()
    return config.events / (time.perf_counter() - started)


def _applied(worker: WorkerProcess) -> float:
    try:
        return sum(float(v) for v in _APPLIED.findall(worker.metrics()))
    except (OSError, httpx.HTTPError):  # not listening yet
        return 0.0


def _cpu_counters(settings: Settings, worker: WorkerProcess) -> dict[str, Callable[[], float]]:
    """CPU-seconds counters of the processes that share the machine while the worker drains:
    the worker (Faust), its apply process, Redis and (when it is a local one whose pid we
    know) Kafka."""
    from infra.local.services import LocalServices

    assert worker.proc is not None
    worker_pid = worker.proc.pid

    def apply_process() -> float:  # started with the first batch, and restarted if it dies
        return sum(process_cpu_seconds(pid) for pid in process_tree(worker_pid)[1:])

    nodes = redis_node_urls(settings)
    counters: dict[str, Callable[[], float]] = {
        "worker": lambda: process_cpu_seconds(worker_pid),
        "apply process": apply_process,
        "redis": partial(redis_cpu_total, nodes),
    }
    if settings.redis_cluster:  # each shard's share too ("redis@host:port")
        for url in nodes:
            counters[f"redis@{url.split('//')[1].split('/')[0]}"] = partial(redis_cpu_seconds, url)
    kafka_pid = LocalServices.from_settings(settings).kafka.process.pid()
    if kafka_pid is not None:
        counters["kafka"] = lambda: process_cpu_seconds(kafka_pid)
    return counters


async def _drain(
    worker: WorkerProcess, total: int, timeout_s: float, cpu: dict[str, Callable[[], float]]
) -> dict[str, Any]:
    """Watch the worker drain the backlog; returns the rate, a time series and the CPU time
    each process of `cpu` spent per event meanwhile."""
    series: list[tuple[float, float]] = []
    first_at: float | None = None
    cpu_at_first: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = _applied(worker)
        now = time.monotonic()
        if done > 0 and first_at is None:
            first_at = now
            # From the first applied events on: the worker's start-up is not its per-event cost.
            cpu_at_first = {name: read() for name, read in cpu.items()}
        if first_at is not None:
            series.append((now - first_at, done))
        if done >= total:
            break
        await asyncio.sleep(0.25)
    else:
        raise TimeoutError(f"worker applied {series[-1][1] if series else 0} of {total} events")
    assert first_at is not None
    elapsed = series[-1][0]
    # The first poll that sees progress is up to one poll late: count from the first sample's
    # events, over the time after it, so the rate is not flattered.
    first_done = series[0][1]
    rate = (total - first_done) / elapsed if elapsed > 0 else float("nan")
    cpu_us = {
        name: (read() - cpu_at_first[name]) / (total - first_done) * 1e6
        for name, read in cpu.items()
    }
    return {"events_per_s": rate, "seconds": elapsed, "series": series, "cpu_us_per_event": cpu_us}


async def _faust_ceiling(settings: Settings, events: int, work_dir: Path) -> dict[str, Any]:
    """The same backlog drained by the worker's agent with a no-op processor (its own consumer
    group): Faust's own ceiling on this machine. See `recsys.bench.noop_drain`."""
    out = work_dir / "noop-drain.json"
    log = work_dir / "noop-drain.log"
    argv = [sys.executable, "-m", "recsys.bench.noop_drain", "--events", str(events),
            "--out", str(out), "--group-id", f"noop-{uuid.uuid4().hex[:8]}"]  # fmt: skip
    with log.open("wb") as sink:
        completed = await asyncio.to_thread(
            subprocess.run, argv, env=service_env(settings), stdout=sink,
            stderr=subprocess.STDOUT, timeout=600, check=False,
        )  # fmt: skip
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(f"the no-op drain failed (exit {completed.returncode}); see {log}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


async def _freshness(settings: Settings, config: StreamBenchConfig) -> dict[str, Any]:
    db = int(settings.redis_url.rsplit("/", 1)[-1] or 0)
    prefix = f"fresh{uuid.uuid4().hex[:6]}-"
    total = int(config.freshness_rate * config.freshness_seconds)
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    all_seen = asyncio.Event()
    # Every server announces the writes to its own keys: listen to each (one, or every node of
    # a cluster).
    servers = [aioredis.Redis.from_url(url) for url in redis_node_urls(settings)]
    pubsubs = []
    for server in servers:
        await server.config_set("notify-keyspace-events", "K$")  # SET of a state
        pubsub = server.pubsub()
        await pubsub.psubscribe(f"__keyspace@{db}__:{keys.user_state_pattern(prefix + '*')}")
        pubsubs.append(pubsub)

    async def listen(pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            channel = as_bytes(message["channel"]).decode()
            user = keys.user_of_state_key(channel.split("__:", 1)[1])
            seen_at.setdefault(user, time.perf_counter())
            if len(seen_at) >= total:
                all_seen.set()

    listeners = [asyncio.create_task(listen(pubsub)) for pubsub in pubsubs]
    producer = kafka_producer(settings)
    await producer.start()
    started = time.perf_counter()
    # This process (the producer, and the listener timing each event) shares the worker's cores.
    cpu_started = time.process_time()
    try:
        for n in range(total):
            target = started + n / config.freshness_rate
            if (delay := target - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            user = f"{prefix}{n}"
            event = new_event("click", user, f"i{n % config.items}")
            sent_at[user] = time.perf_counter()
            await producer.send(
                topic_for(event.event_type), encode_event(event), key=event_key(event)
            )
        await producer.flush()
        achieved = total / (time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):  # stragglers are reported as unobserved
            await asyncio.wait_for(all_seen.wait(), 30)
        bench_cpu_s = time.process_time() - cpu_started
    finally:
        await producer.stop()
        for listener in listeners:
            listener.cancel()
        for pubsub in pubsubs:
            await pubsub.punsubscribe()
            await pubsub.aclose()
        for server in servers:
            await server.aclose()
    latencies = [seen_at[u] - sent_at[u] for u in sent_at if u in seen_at]
    if not latencies:
        raise RuntimeError(
            "the freshness run observed no user's state being written: the keyspace "
            "notifications of the state keys (SET) did not arrive; see the worker's log"
        )
    span_s = max(seen_at.values(), default=started) - started
    return {
        "applied_rate": len(latencies) / span_s if span_s > 0 else 0.0,
        "offered_rate": config.freshness_rate,
        "achieved_rate": achieved,
        "events": total,
        "observed": len(latencies),
        "bench_process_cpu_us_per_event": bench_cpu_s / total * 1e6,
        "seconds": percentiles(latencies),
        "samples": latencies,
    }


async def _memory(redis: RedisClient, config: StreamBenchConfig) -> dict[str, Any]:
    """Redis's own accounting (MEMORY USAGE) of the users' state keys, and their parts' sizes."""
    rng = np.random.default_rng(config.seed + 2)
    size = min(config.memory_sample, config.users)
    sample = [f"u{u}" for u in rng.choice(config.users, size=size, replace=False)]
    async with redis.pipeline(transaction=False) as pipe:
        for user in sample:
            key = keys.user_state(user)
            pipe.get(key)
            pipe.memory_usage(key, samples=0)
        replies = await pipe.execute()
    rows = [
        (UserState.unpack(raw), len(raw), int(size))
        for raw, size in zip(replies[::2], replies[1::2], strict=True)
        if raw
    ]
    states = [state for state, _, _ in rows]
    parts = {
        "vector": [0 if s.vector is None else s.vector.size * 2 for s in states],
        "history": [len(s.recent.times) + len(s.recent.items) for s in states],
        "event_ids": [len(s.recent_ids.raw) for s in states],
    }
    return {
        "users_sampled": len(rows),
        "with_fatigue": await _memory_with_fatigue(redis, sample, states),
        "mean_events_per_user": float(np.mean([state.events for state, _, _ in rows])),
        "bytes_per_user": {
            "total_mean": float(np.mean([size for _, _, size in rows])),
            "total_p95": float(np.percentile([size for _, _, size in rows], 95)),
            "value": float(np.mean([length for _, length, _ in rows])),
            **{name: float(np.mean(sizes)) for name, sizes in parts.items()},
        },
    }


async def _transition_memory(redis: RedisClient) -> dict[str, float]:
    """Redis's accounting of the item-to-item transition table (`core.keys.item_transitions`):
    its keys' MEMORY USAGE over the items they start from."""
    found = [key async for key in redis.scan_iter(match="recsys:{i:*}:next:*", count=1000)]
    if not found:
        return {"source_items": 0.0, "bytes_per_item": 0.0, "next_items_mean": 0.0}
    async with redis.pipeline(transaction=False) as pipe:
        for key in found:
            pipe.memory_usage(key, samples=0)
            pipe.zcard(key)
        replies = await pipe.execute()
    sizes, members = replies[::2], replies[1::2]
    return {
        "source_items": float(len(found)),
        "bytes_per_item": float(np.mean([int(size or 0) for size in sizes])),
        "next_items_mean": float(np.mean(members)),
    }


async def _memory_with_fatigue(
    redis: RedisClient, sample: list[str], states: list[UserState]
) -> dict[str, float]:
    """The sampled users' memory once they have been shown answers: their states rewritten with
    the fatigue records full (`Settings.fatigue_max_items` items shown, as the worker keeps
    them from impressions), measured the same way: the bound of what impressions add."""
    limit = Settings().fatigue_max_items
    shown = [f"i{n}" for n in range(limit)]
    now = int(time.time())
    async with redis.pipeline(transaction=False) as pipe:
        for user, state in zip(sample, states, strict=False):
            state.fatigue = state.fatigue.shown(shown, now, 86_400, limit)
            pipe.set(keys.user_state(user), state.encode(now * 1000))
        await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for user in sample[: len(states)]:
            pipe.memory_usage(keys.user_state(user), samples=0)
        sizes = [int(size) for size in await pipe.execute()]
    return {
        "items": float(limit),
        "total_mean": float(np.mean(sizes)),
        "fatigue_bytes": float(np.mean([len(s.fatigue.raw) for s in states])),
    }


async def run(settings: Settings, config: StreamBenchConfig, work_dir: Path) -> dict[str, Any]:
    redis = redis_client_for(settings)
    await flush_everywhere(redis)
    await ensure_topics(settings)
    version = await _publish_model(redis, config, work_dir)
    item_memory = await _item_memory(redis, version, config.items, work_dir / "qdrant")
    producer_rate = await _produce_backlog(settings, config)
    table = {"RECSYS_STREAM_TRANSITIONS_TOP_N": str(config.transitions_top_n)}
    worker = WorkerProcess(settings, work_dir, f"bench-{uuid.uuid4().hex[:8]}", env=table).start()
    try:
        cpu = _cpu_counters(settings, worker)
        throughput = await _drain(worker, config.events, timeout_s=600, cpu=cpu)
        memory = await _memory(redis, config)
        memory["transitions"] = await _transition_memory(redis)
        ceiling = (
            await _faust_ceiling(settings, config.events, work_dir)
            if config.faust_ceiling
            else None
        )
        freshness = await _freshness(settings, config)
        sweep = [
            await _freshness(
                settings,
                replace(config, freshness_rate=rate, freshness_seconds=config.sweep_seconds),
            )
            for rate in config.sweep_rates
        ]
        for run in sweep:
            run.pop("samples")
    finally:
        worker.stop()
        await redis.aclose()
    return {
        "benchmark": "stream",
        "redis": redis_topology(settings),
        "config": config.__dict__,
        "producer_events_per_s": producer_rate,
        "throughput": throughput,
        "faust_noop_drain": ceiling,
        "freshness": freshness,
        "sweep": sweep,
        "memory": memory,
        "bytes_per_item": item_memory,
    }


def run_with_local_services(
    config: StreamBenchConfig, use_running: bool, redis_cluster: int | None = None
) -> dict[str, Any]:
    """Run against throwaway local services (with `redis_cluster`, a Redis Cluster of that many
    masters), or the configured ones."""
    with bench_services(use_running, "recsys-bench-", redis_cluster) as (settings, work_dir):
        return asyncio.run(run(settings, config, work_dir))
