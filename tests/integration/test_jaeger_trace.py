"""One event, one trace, across both services, in a real Jaeger: POST /events on a real API
process, through the session's Kafka, to a real worker process writing to Redis, every span
exported over OTLP/HTTP and read back through Jaeger's HTTP query API.

Jaeger is built from its Go module by infra/jaeger/install.sh (cached per machine; .ci/run builds
it before the tests). If it cannot be built or started, the test fails with the reason."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from core import keys
from core.settings import Settings
from infra.local.jaeger import INSTALL_TIMEOUT_S, JaegerServer, install_jaeger
from infra.local.process import ServiceError, free_port
from recsys.bench.soak import LagReader
from recsys.processes import WorkerProcess, wait_until
from tests.integration.conftest import Published

# A first build of Jaeger on a fresh machine happens inside this test's fixture.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)]

CACHE_DIR = Path.home() / ".cache" / "recsys"
API_KEY = "trace-test-key"
# Export spans within a fraction of a second (the SDK's default batches for 5 s).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerServer]:
    try:
        binary = install_jaeger(CACHE_DIR)
    except ServiceError as exc:
        pytest.fail(f"Jaeger could not be installed: {exc}", pytrace=False)
    server = JaegerServer(
        home=tmp_path_factory.mktemp("jaeger"),
        binary=binary,
        otlp_http_port=free_port(),
        otlp_grpc_port=free_port(),
        query_http_port=free_port(),
        query_grpc_port=free_port(),
        health_port=free_port(),
    )
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(f"Jaeger could not be started: {exc}", pytrace=False)
    yield server
    server.stop()


@dataclass
class ApiProcess:
    """`recsys serve` as a subprocess on 127.0.0.1, with its own log."""

    proc: subprocess.Popen[bytes]
    url: str
    log_file: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def api_process(
    service_settings: Settings, published: Published, jaeger: JaegerServer, tmp_path: Path
) -> Iterator[ApiProcess]:
    port = free_port()
    log_file = tmp_path / "api.log"
    env = {
        **os.environ,
        **FAST_EXPORT,
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": service_settings.kafka_bootstrap_servers,
        "RECSYS_REDIS_URL": service_settings.redis_url,
        "RECSYS_STATE_DIR": str(service_settings.state_dir),
        "RECSYS_QDRANT_PATH": str(published.qdrant_path),
        "RECSYS_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "RECSYS_API_KEY": API_KEY,
        "RECSYS_API_KAFKA_TIMEOUT_MS": "15000",
        "RECSYS_LOG_LEVEL": "WARNING",
    }
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    api = ApiProcess(proc, f"http://127.0.0.1:{port}", log_file)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the API exited:\n{api.log_tail()}"
            try:
                if httpx.get(f"{api.url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{api.log_tail()}"
            time.sleep(0.2)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def traced_worker(
    service_settings: Settings, jaeger: JaegerServer, tmp_path: Path
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        service_settings,
        tmp_path,
        group_id=f"trace-{uuid.uuid4().hex[:8]}",
        env={**FAST_EXPORT, "RECSYS_OTLP_ENDPOINT": jaeger.otlp_endpoint},
    ).start()
    yield worker
    worker.stop()


def click(user_id: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "click",
        "user_id": user_id,
        "item_id": "c1",
        "ts": datetime.now(UTC).isoformat(),
    }


async def post_event(api: ApiProcess, event: dict[str, Any], trace_id: str | None = None) -> None:
    headers = {"X-API-Key": API_KEY}
    if trace_id is not None:
        # The caller's own trace context: the API continues it, so the test knows the trace id.
        headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{api.url}/events", json=event, headers=headers)
    assert response.status_code == 202, response.text


def tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def parent_id(span: dict[str, Any]) -> str | None:
    return next(
        (r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"), None
    )


@dataclass
class Trace:
    spans: list[dict[str, Any]]
    services: dict[str, str]  # processID -> service name

    def service(self, span: dict[str, Any]) -> str:
        return self.services[span["processID"]]

    def find(self, service: str, operation: str) -> dict[str, Any] | None:
        for span in self.spans:
            if self.service(span) == service and span["operationName"] == operation:
                return span
        return None

    def outline(self) -> list[tuple[str, str, str, str | None]]:
        """(service, operation, span id, parent id) of every span, for failure messages."""
        return [
            (self.service(s), s["operationName"], s["spanID"], parent_id(s)) for s in self.spans
        ]

    def by_id(self, span_id: str | None) -> dict[str, Any] | None:
        return next((s for s in self.spans if s["spanID"] == span_id), None)


async def fetch_trace(jaeger: JaegerServer, trace_id: str) -> Trace | None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{jaeger.query_url}/api/traces/{trace_id}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    data = response.json().get("data") or []
    if not data:
        return None
    services = {pid: p["serviceName"] for pid, p in data[0]["processes"].items()}
    return Trace(data[0]["spans"], services)


def complete(trace: Trace | None) -> bool:
    return (
        trace is not None
        and trace.find("recsys-api", "POST /events") is not None
        and trace.find("recsys-worker", "events.click process") is not None
        and trace.find("recsys-worker", "redis apply_batch") is not None
    )


async def test_one_event_is_one_trace_across_api_kafka_and_worker(
    jaeger: JaegerServer,
    api_process: ApiProcess,
    traced_worker: WorkerProcess,
    redis: aioredis.Redis,
    service_settings: Settings,
) -> None:
    # The new consumer group starts from the earliest offsets: wait until the worker has caught
    # up with everything earlier tests published, on every partition of every topic it reads,
    # so that the traced event is alone in its batch (a batch's Redis span is the child of its
    # first event's span, and only linked from the others). The warm-up event's key covers one
    # partition; the group's committed lag covers the rest (a CI run saw the traced event
    # share a batch with an older event of another partition).
    await post_event(api_process, click("trace-warm-up"))

    async def warmed_up() -> bool:
        return bool(await redis.exists(keys.user_state("trace-warm-up")))

    await wait_until(
        warmed_up,
        90,
        "the worker to apply the warm-up event",
        traced_worker,
    )
    lag = await LagReader.start(service_settings, traced_worker.group_id)
    try:

        async def caught_up() -> bool:
            return await lag.lag() == 0

        await wait_until(caught_up, 60, "the worker's consumer lag to reach 0", traced_worker)
    finally:
        await lag.stop()

    trace_id = secrets.token_hex(16)
    await post_event(api_process, click("trace-user"), trace_id)

    found: Trace | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = await fetch_trace(jaeger, trace_id)
        if complete(found):
            break
        await asyncio.sleep(0.3)
    seen = sorted({(found.service(s), s["operationName"]) for s in found.spans}) if found else None
    assert complete(found), (
        f"trace {trace_id} in Jaeger has spans {seen}\n"
        f"API log:\n{api_process.log_tail()}\nworker log:\n{traced_worker.log_tail()}"
    )
    assert found is not None

    process = found.find("recsys-worker", "events.click process")
    apply = found.find("recsys-worker", "redis apply_batch")
    assert process is not None
    assert apply is not None
    assert set(found.services.values()) >= {"recsys-api", "recsys-worker"}

    # The Kafka hop: the worker's consumer span continues the context the API put in the
    # message's headers, which is that of the API's producer span around the send
    # (api/publisher.py), so the producer span is its parent, and the request's one server
    # span (the API's middleware; FastAPI's own request spans are off) is the producer's.
    publisher = found.by_id(parent_id(process))
    assert publisher is not None, f"the worker's span has no parent in the API: {found.outline()}"
    assert found.service(publisher) == "recsys-api"
    assert publisher["operationName"] == "events.click publish", found.outline()  # the Kafka send
    requests = [s for s in found.spans if s["operationName"] == "POST /events"]
    assert len(requests) == 1, found.outline()
    request = found.by_id(parent_id(publisher))
    assert request is requests[0], f"the publishing span is not the request's: {found.outline()}"
    assert found.service(request) == "recsys-api"
    assert tag(request, "span.kind") == "server"
    assert tag(process, "span.kind") == "consumer"
    assert tag(process, "messaging.system") == "kafka"
    assert tag(process, "messaging.destination.name") == "events.click"

    # The Redis write of the batch belongs to this event's processing.
    assert parent_id(apply) == process["spanID"]
    assert tag(apply, "db.system") == "redis"
