"""recsys.client against the app served over HTTP on the real Redis, Kafka and a published
model: every route answers its typed model, and every error is its typed exception with the
API's error body (a 422 names the field at fault)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from api.main import create_app
from core.settings import Settings
from recsys.client import (
    NO_RETRY,
    AsyncRecsysClient,
    ConflictError,
    NotFoundError,
    RecsysClient,
    RequestInvalidError,
    UnauthorizedError,
)
from schemas import new_event
from tests.integration.conftest import Published, served_over_http

pytestmark = pytest.mark.integration

API_KEY = "client-key-0123456789"


@pytest.fixture
def served_url(make_api_settings: Callable[..., Settings], published: Published) -> Iterator[str]:
    with served_over_http(create_app(make_api_settings(api_key=SecretStr(API_KEY)))) as url:
        yield url


def test_every_route_answers_its_model(served_url: str, published: Published) -> None:
    item = str(published.artifacts.item_ids[0])
    with RecsysClient(served_url, api_key=API_KEY) as api:
        answer = api.recommend("u3", k=5, diversity=1.0, explain=True)
        assert answer.source == "personalized"
        assert len(answer.items) == 5
        assert answer.model_version == published.version
        assert answer.recommendation_id is not None
        similar = api.similar(item, k=3, exclude_ids=[item])
        assert len(similar.items) == 3
        assert item not in {s.item_id for s in similar.items}
        accepted = api.post_events([new_event("view", "client-user", item)])
        assert accepted.accepted == 1
        assert api.profile("u3").user_id == "u3"
        assert api.experiments() == []
        assert api.drift().model_version == published.version
        assert api.live().status == "ok"
        assert api.ready().status == "ok"
        assert "recsys_api_requests_total" in api.metrics()
        assert api.models().active == published.version
        assert api.stream(dead_letters=5).unavailable == []
        assert api.item(item).item_id == item
        with pytest.raises(ConflictError):
            api.rollback()  # one version only: nothing to roll back to
        switched = api.activate(published.version)
        assert (switched.previous, switched.active) == (published.version, published.version)


def test_errors_are_typed_and_name_the_field(served_url: str, published: Published) -> None:
    far = new_event("view", "u3", str(published.artifacts.item_ids[0]))
    far = far.model_copy(update={"ts": datetime.now(UTC) + timedelta(days=30)})
    with RecsysClient(served_url, api_key=API_KEY, retry=NO_RETRY) as api:
        with pytest.raises(RequestInvalidError) as invalid:
            api.recommend("u3", k=0)
        with pytest.raises(RequestInvalidError) as event_invalid:
            api.post_events([far])  # a timestamp a month ahead: refused, nothing published
        with pytest.raises(NotFoundError) as missing:
            api.similar("no-such-item")
        with pytest.raises(NotFoundError):
            api.experiment("never-registered")
    assert invalid.value.status == 422
    assert invalid.value.fields == ["k"]
    assert event_invalid.value.fields == ["ts"]
    assert event_invalid.value.problems[0].index == 0
    assert "no-such-item" in str(missing.value)

    wrong = RecsysClient(served_url, api_key="wrong-key", retry=NO_RETRY)
    with wrong, pytest.raises(UnauthorizedError):
        wrong.post_events([new_event("view", "u3", "x")])


def test_the_async_client_answers_the_same(served_url: str) -> None:
    async def both() -> tuple[list[str], list[str]]:
        async with AsyncRecsysClient(served_url, api_key=API_KEY) as api:
            first = await api.recommend("u3", k=5, diversity=1.0)
            again = await api.recommend("u3", k=5, diversity=1.0)
            with pytest.raises(RequestInvalidError):
                await api.profile("u3", history=-1)
            assert (await api.ready()).status == "ok"
        return [i.item_id for i in first.items], [i.item_id for i in again.items]

    first, again = asyncio.run(both())
    assert first == again
    with RecsysClient(served_url) as sync:
        assert [i.item_id for i in sync.recommend("u3", k=5, diversity=1.0).items] == first


def test_the_readme_example_runs(served_url: str) -> None:
    """The README's Python example, as written, against the served app (its URL swapped in)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "RecsysClient(" in example
    code = example.replace("http://127.0.0.1:8000", served_url).replace(
        "api_key=None", f"api_key={API_KEY!r}"
    )
    exec(compile(code, "README.md", "exec"), {})
