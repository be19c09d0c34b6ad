"""Faults under bounded load (issue 21): what each one proves.

1. kill -9 one API worker of `recsys serve --workers 2`, then the other: uvicorn's supervisor
   replaces each; only requests in flight at a kill may fail (a reset connection, never a 5xx);
   every other request answers 200, including those sent once both original workers are dead.
2. kill -9 the stream worker mid-stream and restart it: covered, with duplicate publishes, by
   `test_kill_9_mid_stream_with_duplicates_applies_everything_once` in
   test_stream_reliability.py (on one Redis and on a cluster); not repeated here.
3. The Kafka broker stopped for 10 s under POST /events load: every request answers 202 or 503
   within the request timeout, the producer recovers by itself, every accepted event is applied
   exactly once, and a client that retries its refused requests with the same event ids gets
   each of those applied exactly once too.
4. Redis (append-only file on, no RDB snapshots) restarted under /recommend load: every answer
   is a 200 (from the fallbacks while Redis is away); a user's state (written with the shared
   codec) and the active model version are there after, byte for byte.
5. The archive's disk full under load: the stream worker keeps applying, the archiver counts
   write errors and its lag gauge (`recsys_archive_lag_seconds`, alert RecsysArchiveLagging)
   grows, and once space returns every event is archived exactly once.

Test 3 gets its own Kafka broker and Redis, test 4 its own Redis, because they stop and restart
them (never the session's shared services). Test 5 mounts a small tmpfs for the archive (as root,
`chmod` stops no write) and is skipped where mounting is not permitted. Loads are bounded in
requests and in time. The fault helpers live in `recsys.faults`, for the soak benchmark too.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from deltalake import DeltaTable

from api.main import create_app
from batch.publish import ModelArtifacts
from core import keys
from core.clients import RedisClient, ensure_topics, redis_client
from core.settings import Settings
from core.user_state import HistoryEntry, UserState
from infra.local.kafka import KafkaServer
from infra.local.process import free_port
from infra.local.redis import RedisServer
from recsys.bench.api import serving
from recsys.bench.common import service_env
from recsys.faults import (
    FaultUnavailableError,
    api_worker_pids,
    fill_disk,
    kill_api_worker,
    small_filesystem,
    wait_for_replacement,
    wait_until_serving,
)
from recsys.processes import ArchiverProcess, WorkerProcess, wait_until
from schemas import AnyEvent, EventType, encode_event, new_event
from tests.conftest import CACHE_DIR
from tests.integration.conftest import ApiSettings, Published, publish_model, served_over_http
from tests.integration.test_archive import archive_settings, archived_up_to, publish, rows_of
from tests.integration.test_stream_worker import (
    FULL_HISTORY,
    ITEMS,
    all_applied,
    as_messages,
    assert_applied_exactly_once,
    make_events,
)
from tests.integration.test_stream_worker import publish_model as publish_small_model

pytestmark = pytest.mark.integration

Outcome = int | str  # an HTTP status, or the name of the transport error


@dataclass
class Tally:
    """What a bounded load has seen so far: outcomes counted, requests in flight now."""

    sent: int = 0
    in_flight: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome != 200)


async def keep_busy(
    send: Callable[[int], Awaitable[int]],
    tally: Tally,
    stop: asyncio.Event,
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    pause_s: float = 0.0,
) -> None:
    """`concurrency` loops calling `send(n)` until `stop`, `max_requests` or `max_seconds`."""
    deadline = time.monotonic() + max_seconds

    async def loop() -> None:
        while not stop.is_set() and tally.sent < max_requests and time.monotonic() < deadline:
            n = tally.sent
            tally.sent += 1
            tally.in_flight += 1
            outcome: Outcome
            try:
                outcome = await send(n)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            finally:
                tally.in_flight -= 1
            tally.outcomes[outcome] += 1
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


async def until(
    check: Callable[[], bool], timeout_s: float, what: str, log: Callable[[], str] | None = None
) -> None:
    """Poll `check`; on timeout, fail with `log()` (a process's log tail) to say why."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            detail = f"\nlog:\n{log()}" if log else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        await asyncio.sleep(0.05)


# --- 1. kill -9 an API worker ---------------------------------------------------------------


def process_state(pid: int) -> str:
    """What a process is doing, for a failure message: its state, where it sleeps in the
    kernel, its CPU seconds so far (a slow start burns CPU, a blocked one does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        state = next(line for line in status.splitlines() if line.startswith("State:"))
        wchan = Path(f"/proc/{pid}/wchan").read_text()
        ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    except (OSError, StopIteration) as exc:
        return f"pid {pid}: {exc!r}"
    cpu_s = sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")
    return f"pid {pid}: {state.strip()}, wchan {wchan or '-'}, {cpu_s:.1f} s of CPU"


# The whole suite runs before this test on 2 cores; a replacement's start has taken over 60 s
# there (twice in about ten CI runs), so the bounds leave room, and a miss says why.
SERVING_TIMEOUT_S = 150


@pytest.mark.timeout(900)
async def test_kill_9_api_workers_in_turn_each_is_replaced_and_only_in_flight_requests_fail(
    service_settings: Settings, published: Published, tmp_path: Path
) -> None:
    settings = service_settings.model_copy(update={"qdrant_path": published.qdrant_path})
    with serving(service_env(settings), 2, tmp_path) as server:
        supervisor, port = server.pid, server.port
        originals = api_worker_pids(supervisor, port)
        assert len(originals) == 2, originals
        tally, stop = Tally(), asyncio.Event()
        # No keep-alive: every request is a new connection, which either worker may accept,
        # so a request sent after a kill never rides a connection the dead worker held.
        limits = httpx.Limits(max_connections=6, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:

            async def send(n: int) -> int:
                response = await client.get(f"/recommend/u{n % 60}", params={"k": 5})
                return response.status_code

            # Bounded, but with room for both replacements to start on a loaded machine: the
            # waits below need traffic to see a replacement serving (6,000 requests ran out
            # before the second did in a full-suite run).
            load = asyncio.create_task(
                keep_busy(send, tally, stop, concurrency=6, max_requests=100_000, max_seconds=420)
            )
            try:
                await until(lambda: tally.outcomes[200] >= 30, 30, "the first answers")
                in_flight_at_kills = 0
                replacements: list[int] = []
                started = time.monotonic()
                for victim in originals:
                    # Counted and killed with no await between: no request starts in between.
                    in_flight_at_kills += tally.in_flight
                    kill_api_worker(supervisor, port, victim)
                    now = await asyncio.to_thread(
                        wait_for_replacement, supervisor, port, victim, 2, 60
                    )
                    new = next(pid for pid in now if pid not in originals + replacements)
                    replacements.append(new)
                    try:
                        waited = await asyncio.to_thread(
                            wait_until_serving, new, port, SERVING_TIMEOUT_S
                        )
                    except TimeoutError as exc:
                        raise AssertionError(
                            f"{exc}; {tally.sent} requests sent, {dict(tally.outcomes)}, load "
                            f"{'running' if not load.done() else 'over'}; {process_state(new)}; "
                            f"load average {os.getloadavg()}\n{server.log_tail()}"
                        ) from exc
                    print(f"\nreplacement {new} serving after {waited:.1f} s")
                replaced_in_s = time.monotonic() - started
                # Both original workers are dead: these answers come from the replacements.
                ok_after = tally.outcomes[200] + 50
                await until(lambda: tally.outcomes[200] >= ok_after, 30, "answers after")
            finally:
                stop.set()
                await load
            metrics = await client.get("/metrics")
        assert server.alive, server.log_tail()
        assert sorted(api_worker_pids(supervisor, port)) == sorted(replacements)
    print(f"\n{tally.sent} requests, {dict(tally.outcomes)}, {in_flight_at_kills} in flight at "
          f"the kills, both replaced and serving in {replaced_in_s:.1f} s")  # fmt: skip
    assert tally.failed <= in_flight_at_kills, tally.outcomes
    # A failure is a reset connection, never an answer other than 200 (a 5xx, say).
    assert all(isinstance(outcome, str) or outcome == 200 for outcome in tally.outcomes)
    assert metrics.status_code == 200


# --- 3. the Kafka broker down under POST /events --------------------------------------------


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    kafka = KafkaServer(tmp_path / "kafka", free_port(), free_port(), CACHE_DIR)
    kafka.start()
    yield kafka
    kafka.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this module's tests may stop and restart, append-only so that it keeps its data."""
    server = RedisServer(tmp_path / "redis", free_port(), appendonly=True)
    server.start()
    yield server
    server.stop()


async def ready(worker: WorkerProcess) -> bool:
    try:
        status, _ = await asyncio.to_thread(worker.readiness)
    except httpx.HTTPError:
        return False
    return status == 200


def batch_for(user: str, count: int) -> list[AnyEvent]:
    start = datetime.now(UTC) - timedelta(minutes=1)
    kinds: tuple[EventType, ...] = ("view", "click", "purchase")
    return [
        new_event(kinds[n % 3], user, ITEMS[n % len(ITEMS)], ts=start + timedelta(seconds=n))
        for n in range(count)
    ]


def body_of(events: list[AnyEvent]) -> bytes:
    return b"[" + b",".join(encode_event(e) for e in events) + b"]"


async def test_broker_down_for_10_s_under_post_events_202_or_503_and_nothing_lost(
    own_kafka: KafkaServer,
    own_redis: RedisServer,
    make_api_settings: ApiSettings,
    tmp_path: Path,
) -> None:
    kafka_timeout_s = 3.0
    settings = make_api_settings(
        kafka_bootstrap_servers=own_kafka.bootstrap_servers,
        redis_url=own_redis.url,
        state_dir=tmp_path / "state",
        api_kafka_timeout_ms=kafka_timeout_s * 1000,
    )
    await ensure_topics(settings)
    redis = redis_client(settings)
    await publish_small_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    worker = WorkerProcess(settings, tmp_path, f"g-{prefix}", env=FULL_HISTORY).start()
    # Consuming before the broker goes: a worker that starts while it is away exits at once.
    await wait_until(lambda: ready(worker), 60, "the worker to consume", worker)
    batches: dict[int, list[AnyEvent]] = {}
    statuses: dict[int, int] = {}
    tally, stop = Tally(), asyncio.Event()
    try:
        with served_over_http(create_app(settings)) as base_url:
            # The request timeout: the API's own Kafka timeout plus a margin for this machine.
            async with httpx.AsyncClient(base_url=base_url, timeout=kafka_timeout_s + 5) as client:

                async def send(n: int) -> int:
                    events = batch_for(f"{prefix}-r{n}", 3)  # a user per request
                    batches[n] = events
                    response = await client.post("/events", content=body_of(events))
                    statuses[n] = response.status_code
                    return response.status_code

                load = asyncio.create_task(
                    keep_busy(send, tally, stop, concurrency=4, max_requests=3000,
                              max_seconds=120, pause_s=0.1)
                )  # fmt: skip
                try:
                    await until(lambda: tally.outcomes[202] >= 20, 60, "accepted events")
                    await asyncio.to_thread(own_kafka.stop)
                    await asyncio.sleep(10)
                    await until(lambda: tally.outcomes[503] > 0, 30, "a 503")
                    await asyncio.to_thread(own_kafka.start)
                    accepted_at_restart = tally.outcomes[202]
                    # The producer reconnects by itself: new requests are accepted again.
                    await until(
                        lambda: tally.outcomes[202] >= accepted_at_restart + 20, 60, "recovery"
                    )
                finally:
                    stop.set()
                    await load
                print(f"\n{tally.sent} requests while the broker went away: {dict(tally.outcomes)}")
                assert set(tally.outcomes) <= {202, 503}, tally.outcomes
                # The client retries each refused request with the same event ids.
                for n, events in batches.items():
                    status = statuses.get(n, 0)
                    for _ in range(20):
                        if status == 202:
                            break
                        retried = await client.post("/events", content=body_of(events))
                        status = retried.status_code
                        if status != 202:
                            await asyncio.sleep(0.5)
                    assert status == 202, f"request {n} still refused after retries"
        events = [e for batch in batches.values() for e in batch]
        users = {e.user_id for e in events}
        await wait_until(lambda: all_applied(redis, users, len(events)), 90, "all events", worker)
        await asyncio.sleep(1)  # anything still in flight must change nothing
        await assert_applied_exactly_once(redis, events)
        assert worker.alive, worker.log_tail()
    finally:
        worker.stop()
        await redis.aclose()


# --- 4. Redis restarted with its append-only file -------------------------------------------


async def test_redis_restart_under_recommend_load_keeps_state_and_never_answers_5xx(
    own_redis: RedisServer,
    make_api_settings: ApiSettings,
    taste_model: ModelArtifacts,
    tmp_path: Path,
) -> None:
    settings = make_api_settings(redis_url=own_redis.url)
    redis = redis_client(settings)
    published = await publish_model(taste_model, redis, tmp_path)
    # u3 likes Comedy; the state says it has seen five Comedy items, which answers exclude.
    seen = [f"c{i}" for i in range(5)]
    state = UserState(events=len(seen), last_event_ms=int(time.time() * 1000))
    state.recent = state.recent.push(
        [HistoryEntry(state.last_event_ms - n, "view", item) for n, item in enumerate(seen)], 50
    )
    await redis.set(keys.user_state("u3"), state.encode(int(time.time() * 1000)))
    stored = await redis.get(keys.user_state("u3"))
    sources: Counter[str] = Counter()
    tally, stop = Tally(), asyncio.Event()
    try:
        async with httpx.AsyncClient(timeout=15) as client:
            with served_over_http(create_app(settings)) as base_url:
                profile_before = (await client.get(f"{base_url}/users/u3/profile")).json()
                assert profile_before["events"] == len(seen)

                async def send(n: int) -> int:
                    user = "u3" if n % 2 else f"u{n % 60}"
                    response = await client.get(f"{base_url}/recommend/{user}", params={"k": 5})
                    if response.status_code == 200:
                        body = response.json()
                        sources[body["source"]] += 1
                        if user == "u3" and body["source"] == "personalized":
                            assert not {i["item_id"] for i in body["items"]} & set(seen)
                    return response.status_code

                load = asyncio.create_task(
                    keep_busy(send, tally, stop, concurrency=4, max_requests=4000,
                              max_seconds=90, pause_s=0.01)
                )  # fmt: skip
                try:
                    await until(lambda: tally.outcomes[200] >= 30, 30, "the first answers")
                    await asyncio.to_thread(own_redis.stop)
                    await until(lambda: sources["popular"] >= 20, 30, "fallback answers")
                    await asyncio.sleep(2)
                    await asyncio.to_thread(own_redis.start)
                    personalized = sources["personalized"]
                    await until(
                        lambda: sources["personalized"] >= personalized + 30, 30, "recovery"
                    )
                finally:
                    stop.set()
                    await load
                profile_after = (await client.get(f"{base_url}/users/u3/profile")).json()
        print(f"\n{tally.sent} requests across a Redis restart: {dict(tally.outcomes)}, "
              f"sources {dict(sources)}")  # fmt: skip
        assert set(tally.outcomes) == {200}, tally.outcomes
        assert await redis.get(keys.user_state("u3")) == stored
        assert (await redis.get(keys.ACTIVE_MODEL)) == published.version.encode()
        assert profile_after == profile_before
    finally:
        await redis.aclose()


# --- 5. The archive's disk full -------------------------------------------------------------


async def test_archive_disk_full_the_worker_carries_on_and_nothing_is_lost(
    service_settings: Settings, redis: RedisClient, tmp_path: Path
) -> None:
    try:
        with small_filesystem(tmp_path / "archive-fs", 16 << 20) as disk:
            await _archive_disk_full(service_settings, redis, disk, tmp_path)
    except FaultUnavailableError as exc:
        pytest.skip(f"cannot give the archive a disk of its own to fill: {exc}")


async def _archive_disk_full(
    service_settings: Settings, redis: RedisClient, disk: Path, tmp_path: Path
) -> None:
    settings = archive_settings(service_settings, tmp_path)
    settings = settings.model_copy(update={"archive_uri": str(disk / "events")})
    await ensure_topics(settings)
    await publish_small_model(redis, tmp_path)
    prefix = uuid.uuid4().hex[:6]
    before, during = make_events(f"{prefix}a", 10, 200), make_events(f"{prefix}b", 20, 1000)
    probe = make_events(f"{prefix}p", 2, 10)
    everything = before + probe + during
    worker = WorkerProcess(settings, tmp_path, f"g-{prefix}", env=FULL_HISTORY).start()
    archiver = ArchiverProcess(settings, tmp_path).start()
    try:
        # A new group starts at the earliest offsets: the archiver catches up with what earlier
        # tests published, then archives a probe alone, so that its lag is fresh before the fault.
        await archived_up_to(settings, await publish(settings, as_messages(before)))
        await archived_up_to(settings, await publish(settings, as_messages(probe)))
        lag_before = archiver.lag_s()
        filler = await asyncio.to_thread(fill_disk, disk)
        full_since = time.monotonic()
        sent = await publish(settings, as_messages(during), per_second=500)
        users = {e.user_id for e in everything}
        await wait_until(
            lambda: all_applied(redis, users, len(everything)), 60, "events applied", worker
        )
        await until(
            lambda: archiver.lag_s() >= lag_before + 3,
            30,
            f"the archive lag to grow from {lag_before:.1f} s",
            archiver.log_tail,
        )
        lag_while_full = archiver.lag_s()
        assert archiver.write_errors() > 0
        assert not rows_of(DeltaTable(settings.archive_location), during)
        full_for_s = time.monotonic() - full_since
        filler.unlink()  # space returns
        table = await archived_up_to(settings, sent, timeout_s=60)
        assert archiver.alive, archiver.log_tail()
    finally:
        archiver.stop()
        worker.stop()
    print(f"\nthe archive's disk was full for {full_for_s:.1f} s; its lag went from "
          f"{lag_before:.1f} s to {lag_while_full:.1f} s")  # fmt: skip
    ids = rows_of(table, everything)
    assert len(ids) == len(set(ids)), "an event was archived twice"
    assert set(ids) == {str(e.event_id) for e in everything}, "an event was lost"
    await assert_applied_exactly_once(redis, everything)
