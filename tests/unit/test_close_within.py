"""Shutdown steps are bounded: a close that never finishes is abandoned with a warning."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.clients import close_within

pytestmark = pytest.mark.unit


async def test_a_close_that_hangs_is_abandoned_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.monotonic()
    await close_within("stuck client", asyncio.sleep(60), timeout_s=0.05)
    assert time.monotonic() - started < 5
    assert "closing stuck client took over" in caplog.text


async def test_a_failing_close_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise ConnectionResetError("peer gone")

    await close_within("broken client", broken())
    assert "closing broken client failed" in caplog.text


async def test_a_prompt_close_runs_to_completion() -> None:
    closed: list[bool] = []

    async def close() -> None:
        await asyncio.sleep(0)
        closed.append(True)

    await close_within("healthy client", close())
    assert closed == [True]
