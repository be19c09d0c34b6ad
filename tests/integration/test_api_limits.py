"""Limits on what one request may carry, beyond the body size (tests/integration/
test_api_events.py) and the batch length: an event the stream worker would refuse for its
size is refused here, and list parameters count as sent, empty values included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest

from schemas.codec import MAX_EVENT_BYTES

pytestmark = pytest.mark.integration


async def test_an_event_too_large_for_the_worker_is_refused(api: httpx.AsyncClient) -> None:
    # Within every field's limits: 16 context values of 256 characters, each escaped to 6
    # bytes in JSON, come to about 25 KB.
    context = {f"k{n}": "\x01" * 256 for n in range(16)}
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "view",
        "user_id": "u1",
        "item_id": "c1",
        "ts": datetime.now(UTC).isoformat(),
        "context": context,
    }
    answer = await api.post("/events", json=[event])
    assert answer.status_code == 422
    [problem] = answer.json()["detail"]
    assert problem["field"] == "body"
    assert problem["index"] == 0
    assert str(MAX_EVENT_BYTES) in problem["reason"]


async def test_list_parameters_count_each_one_sent(api: httpx.AsyncClient) -> None:
    empty: list[tuple[str, str | int | float | bool | None]] = [("genres", "")] * 101
    # No value after splitting, but 101 parameters.
    assert (await api.get("/recommend/u1", params=empty)).status_code == 422
    assert (await api.get("/recommend/u1", params=empty[:100])).status_code == 200


async def test_path_ids_follow_the_event_id_rule(api: httpx.AsyncClient) -> None:
    for bad in ("%01", "%20", "a%E2%80%8Bb"):  # control, only a space, zero-width space
        answer = await api.get(f"/recommend/{bad}")
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["field"] == "user_id"
    assert (await api.get("/recommend/caf%C3%A9")).status_code == 200
