"""The console in a real browser: Debian's chromium, headless, driven by playwright (its own
browser downloads are not used), against the app served over HTTP on the session's Kafka and
Redis, with a real stream worker applying what the pages send.

One stack per module (the model published, a worker started and caught up, the app served):
starting a worker is most of the cost, and the pages only read it or send events of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from pydantic import SecretStr

from api.main import create_app
from batch.publish import ModelArtifacts
from core.clients import ensure_topics, kafka_producer, redis_client
from core.settings import Settings
from recsys.processes import WorkerProcess
from tests.integration.conftest import (  # taste_model: the session fixture, shared
    api_settings_factory,
    publish_model,
    served_over_http,
    taste_model,  # noqa: F401
)

API_KEY = "console-key-0123456789"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class Stack:
    url: str
    version: str
    worker: WorkerProcess
    worker_ready_s: float


def _wait_caught_up(url: str, worker: WorkerProcess, timeout_s: float) -> None:
    """Until the worker has applied every event published so far (GET /admin/stream)."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/admin/stream", timeout=30).json()
        freshness = status.get("freshness")
        if isinstance(freshness, dict) and freshness["backlog"] == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not catch up: {status}\n{worker.log_tail()}")


async def _prepare(settings: Settings, model: ModelArtifacts, root: Path) -> str:
    """A clean Redis with the model published; the topics, and one message the worker must
    dead-letter (so that the overview shows a real error). Returns the version."""
    redis = redis_client(settings)
    try:
        await redis.flushdb()
        version = (await publish_model(model, redis, root)).version
    finally:
        await redis.aclose()
    await ensure_topics(settings)
    producer = kafka_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait("events.view", b'{"event_type": "view", "user_id": ""}')
    finally:
        await producer.stop()
    return version


def _wait_ready(worker: WorkerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.alive, worker.log_tail()
        with contextlib.suppress(httpx.HTTPError):
            if worker.readiness()[0] == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"the worker is not ready:\n{worker.log_tail()}")


# Synchronous, with its own short event loop: playwright's sync API runs a loop of its own in
# this thread while the browser is open, which pytest-asyncio's fixtures could not enter.
@pytest.fixture(scope="module")
def stack(
    service_settings: Settings,
    taste_model: ModelArtifacts,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("console")
    version = asyncio.run(_prepare(service_settings, taste_model, root))
    started = time.monotonic()
    group = f"console-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(service_settings, root, group).start()
    try:
        _wait_ready(worker, 90)
        ready_s = time.monotonic() - started
        settings = api_settings_factory(service_settings, root)(
            api_key=SecretStr(API_KEY), stream_group_id=group
        )
        with served_over_http(create_app(settings)) as url:
            _wait_caught_up(url, worker, 120)
            caught_up_s = time.monotonic() - started
            print(f"worker ready in {ready_s:.1f} s, caught up in {caught_up_s:.1f} s")
            yield Stack(url, version, worker, ready_s)
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:  # after the stack: see `stack`
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed (apt-get install chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@dataclass
class Console:
    page: Page
    url: str
    errors: list[str]

    def open(self, route: str) -> None:
        self.page.goto(f"{self.url}/console#/{route}")

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=DOCS / name, full_page=True)


@pytest.fixture
def console(stack: Stack, browser: Browser) -> Iterator[Console]:
    """A fresh page; every console error and uncaught exception of the page is collected."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.set_default_timeout(15_000)
    yield Console(page, stack.url, errors)
    context.close()
