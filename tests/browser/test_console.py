"""The console's pages in headless chromium (see conftest): each loads with no console error,
an event sent from the user page changes that user's list on screen within a second (applied
by the real stream worker), and a screenshot of each page is written to docs/."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from core import experiment_store
from core.clients import redis_client_for
from core.experiments import Arm, Experiment
from core.settings import Settings
from tests.browser.conftest import API_KEY, Console, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USER = "u3"  # a Comedy watcher of the taste model (tests/integration/conftest.py)


def assert_clean(console: Console) -> None:
    """No console error, and nothing rendered as an object's name instead of its text."""
    assert console.errors == []
    assert "[object " not in console.page.locator("main").inner_text()


def shown_items(console: Console) -> list[str]:
    rows = console.page.locator("[data-test=recommendations] tbody tr")
    return [rows.nth(n).get_attribute("data-item") or "" for n in range(rows.count())]


def test_a_dislike_sent_from_the_user_page_changes_the_list_within_a_second(
    console: Console, stack: Stack
) -> None:
    page = console.page
    console.open(f"user/{USER}")
    page.locator("[data-test=recommendations] tbody tr").first.wait_for()
    before = shown_items(console)
    assert len(before) == 10
    assert "source personalized" in page.locator("[data-test=answer]").inner_text()
    page.fill("#api-key", API_KEY)

    disliked = before[0]
    started = time.monotonic()
    page.locator(f'tr[data-item="{disliked}"] button[data-event="dislike"]').click()
    page.locator(f'[data-test=recommendations] tr[data-item="{disliked}"]').wait_for(
        state="detached", timeout=10_000
    )
    elapsed_s = time.monotonic() - started
    print(f"dislike sent -> list changed on screen in {elapsed_s * 1000:.0f} ms")
    assert elapsed_s < 1.0, f"the list changed {elapsed_s:.2f} s after the dislike"
    after = shown_items(console)
    assert disliked not in after
    assert len(after) == 10
    history = page.locator("[data-test=history] tbody tr").first.inner_text()
    assert "dislike" in history
    assert disliked in history
    assert_clean(console)
    console.screenshot("console-user.png")


def test_the_item_page_shows_payload_trending_and_similar_items(
    console: Console, stack: Stack
) -> None:
    click = {
        "event_id": str(uuid.uuid4()), "event_type": "click", "user_id": "u40",
        "item_id": "c3", "ts": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    headers = {"X-API-Key": API_KEY}
    assert httpx.post(f"{stack.url}/events", json=click, headers=headers).status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the worker has counted it
        detail = httpx.get(f"{stack.url}/admin/items/c3").json()
        if detail["windows"]["5m"]["counts"].get("click"):
            break
        time.sleep(0.2)
    page = console.page
    console.open("item/c3")
    assert page.locator("[data-test=item-title]").inner_text() == "Comedy 3"
    similar = page.locator("[data-test=similar] tbody tr")
    similar.first.wait_for()
    assert similar.count() == 10
    assert page.locator("[data-test=trending-rank]").inner_text() == "#1"
    assert_clean(console)
    console.screenshot("console-item.png")


def test_the_overview_shows_the_model_stream_and_dead_letters(
    console: Console, stack: Stack
) -> None:
    page = console.page
    console.open("overview")
    assert page.locator("[data-test=active-version]").inner_text() == stack.version
    dead = page.locator("[data-test=dlq-count]")
    dead.wait_for()
    assert not dead.inner_text().startswith("0 ")
    assert page.get_by_text("caught up").count() == 1
    rates = page.locator("[data-test=rates]").inner_text()
    assert "dislike" in rates
    assert_clean(console)
    console.screenshot("console-overview.png")


def test_the_overview_shows_a_running_experiments_arms(
    console: Console, stack: Stack, service_settings: Settings
) -> None:
    experiment = Experiment(
        "console-ab", (Arm("control", 0.5), Arm("diverse", 0.5, {"diversity": 0.5}))
    )

    async def registry(change: str) -> None:
        redis = redis_client_for(service_settings)
        try:
            if change == "create":
                await experiment_store.create(redis, experiment, time.time())
            else:
                await experiment_store.stop(redis, experiment.id, time.time())
        finally:
            await redis.aclose()

    # Playwright's sync API runs its own event loop in this thread: the registry's in another.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, registry("create")).result()
        try:
            console.open("overview")
            card = console.page.locator(".card", has_text="Experiment console-ab")
            card.wait_for()
            arms = card.locator("tbody tr")
            assert arms.count() == 2
            assert arms.nth(0).inner_text().split()[0] == "control"
            assert arms.nth(1).inner_text().split()[0] == "diverse"
            assert_clean(console)
        finally:
            thread.submit(asyncio.run, registry("stop")).result()
