"""recsys.client's retries and error mapping, over httpx's mock transport: what is retried (a
transport failure, a 503) and what is not (any other answer), and how a 422 is read."""

from __future__ import annotations

import httpx
import pytest

from recsys.client import (
    ApiError,
    PayloadTooLargeError,
    RecsysClient,
    RequestInvalidError,
    Retry,
    TransportError,
    UnavailableError,
)
from schemas import new_event

pytestmark = pytest.mark.unit

FAST = Retry(attempts=3, backoff_s=0.001, max_backoff_s=0.002)
ANSWER: dict[str, object] = {
    "user_id": "u1", "items": [], "source": "popular", "model_version": None,
    "recommendation_id": "6f1c3c3e-8a5e-4a4e-9d8e-2f6a0c1b2d3e",
}  # fmt: skip


def client(replies: list[httpx.Response | Exception], seen: list[httpx.Request]) -> RecsysClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return RecsysClient(
        "http://api", api_key="k", retry=FAST, transport=httpx.MockTransport(handle)
    )


def test_a_503_and_a_dropped_connection_are_retried_then_answered() -> None:
    seen: list[httpx.Request] = []
    replies: list[httpx.Response | Exception] = [
        httpx.Response(503, json={"detail": "redis down"}),
        httpx.ConnectError("refused"),
        httpx.Response(200, json=ANSWER),
    ]
    with client(replies, seen) as api:
        assert api.recommend("u1").source == "popular"
    assert len(seen) == 3
    assert all(r.headers["X-API-Key"] == "k" for r in seen)


def test_retries_end_with_the_last_failure() -> None:
    seen: list[httpx.Request] = []
    with (
        client([httpx.Response(503, json={"detail": "kafka down"})] * 3, seen) as api,
        pytest.raises(UnavailableError, match="kafka down"),
    ):
        api.post_events([new_event("view", "u1", "i1")])
    assert len(seen) == 3
    with client([httpx.ConnectError("refused")] * 3, []) as api, pytest.raises(TransportError):
        api.live()


def test_other_errors_are_not_retried_and_keep_the_body() -> None:
    seen: list[httpx.Request] = []
    problem = {"field": "k", "reason": "must be at least 1", "index": None}
    with (
        client([httpx.Response(422, json={"detail": [problem]})], seen) as api,
        pytest.raises(RequestInvalidError) as invalid,
    ):
        api.recommend("u1", k=0)
    assert len(seen) == 1
    assert invalid.value.fields == ["k"]
    assert "k: must be at least 1" in str(invalid.value)
    with (
        client([httpx.Response(413, text="too big")], []) as api,
        pytest.raises(PayloadTooLargeError),
    ):
        api.post_events([new_event("view", "u1", "i1")])
    with (
        client([httpx.Response(500, text="boom")], []) as api,
        pytest.raises(ApiError) as failed,
    ):
        api.live()
    assert failed.value.status == 500


def test_backoff_doubles_up_to_its_cap() -> None:
    retry = Retry(attempts=5, backoff_s=0.1, max_backoff_s=0.3)
    assert [retry.pause(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
