"""The responding users' behaviour model and the runner's bounds (an in-memory API, no I/O)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest

from recsys.client import AsyncRecsysClient
from recsys.respond import (
    BehaviourConfig,
    BehaviourModel,
    RunOptions,
    Shown,
    api_client,
    run_progress,
    run_respond,
    schedule,
    to_events,
)
from recsys.simulator import Catalog, SimulationError

pytestmark = pytest.mark.unit

GENRES = ("Drama", "Comedy", "Horror", "Western", "Noir", "Musical", "Action", "Sci-Fi")


def catalog(n: int = 160) -> Catalog:
    ids = [f"i{j}" for j in range(n)]
    return Catalog(ids, [(GENRES[j % len(GENRES)],) for j in range(n)], np.full(n, 1 / n))


def model(**config: Any) -> BehaviourModel:
    return BehaviourModel(catalog(), BehaviourConfig(**{"users": 40, "seed": 3, **config}))


def in_and_out(m: BehaviourModel, user: int, progress: float) -> tuple[Shown, Shown]:
    liked = m.preferred(int(m.user_cluster[user]), progress)
    genre_of = dict(zip(m.catalog.item_ids, m.catalog.genres, strict=True))
    fits = next(i for i, g in genre_of.items() if g[0] in liked)
    taste = m.taste(int(m.user_cluster[user]), progress)
    zero = {g for g, w in zip(m.genres, taste, strict=True) if w == 0}
    misses = next(i for i, g in genre_of.items() if g[0] in zero)
    return Shown(fits), Shown(misses)


def test_in_taste_items_are_clicked_more_than_others_at_the_same_position() -> None:
    m = model(drift=0.0)
    fits, misses = in_and_out(m, 0, 0.0)
    clicks: Counter[str] = Counter()
    for n in range(4000):  # the same user shown [fits, misses] and [misses, fits]
        for shown in ([fits, misses], [misses, fits]):
            for action in m.respond(n, 0, shown, 0.0):
                if action.kind == "click":
                    clicks[action.item_id] += 1
    # About 0.35 x 1.5 vs 0.03 x 1.5 of 8,000 showings: far apart.
    assert clicks[fits.item_id] > 5 * clicks[misses.item_id] > 0
    assert m.match(0, [fits, misses], 0.0).tolist() == [1.0, 0.0]


def test_clicks_fall_with_position() -> None:
    m = model(drift=0.0)
    fits, _ = in_and_out(m, 0, 0.0)
    by_position: Counter[int] = Counter()
    for n in range(3000):
        for action in m.respond(n, 0, [fits] * 6, 0.0):
            if action.kind == "click":
                assert action.position is not None
                by_position[action.position] += 1
    counts = [by_position[p] for p in range(6)]
    assert counts[0] > counts[1] > counts[2] > counts[5]
    # Examined with probability 1/(1+p): position 0 about twice position 1.
    assert 1.6 < counts[0] / counts[1] < 2.5
    assert m.examine_probability(np.arange(3)).tolist() == [1.0, 0.5, pytest.approx(1 / 3)]


def test_purchases_follow_clicks_later_and_only_of_shown_items() -> None:
    m = model()
    shown = [Shown(f"i{j}") for j in range(10)]
    for n in range(500):
        actions = m.respond(n, n % 40, shown, 0.2)
        clicked = {a.item_id: a.delay_s for a in actions if a.kind == "click"}
        for action in actions:
            assert action.item_id in {s.item_id for s in shown}
            assert shown[action.position or 0].item_id == action.item_id
            if action.kind == "purchase":
                assert action.delay_s > clicked[action.item_id] > 0


def test_the_shift_replaces_every_preferred_genre_at_its_fraction_and_not_before() -> None:
    m = model(shift_at=0.5, drift=0.0)
    for cluster in range(m.config.n_clusters):
        before = {m.preferred(cluster, p) == m.preferred(cluster, 0.0) for p in (0.1, 0.3, 0.49)}
        assert before == {True}
        assert len(m.preferred(cluster, 0.0)) == 3
        after = m.preferred(cluster, 0.5)
        assert len(after) == 3
        assert after.isdisjoint(m.preferred(cluster, 0.0))
        assert m.preferred(cluster, 0.9) == after
    unshifted = model(drift=0.0)
    assert all(unshifted.preferred(c, 0.9) == unshifted.preferred(c, 0.0) for c in range(8))


def test_drift_moves_one_genre_gradually() -> None:
    m = model(drift=1.0)
    start, end = m.preferred(0, 0.0), m.preferred(0, 1.0)
    assert len(start - end) == len(end - start) == 1
    lost = m._column[next(iter(start - end))]
    assert [m.taste(0, p)[lost] for p in (0.0, 0.25, 1.0)] == [1.0, 0.75, 0.0]


def test_same_seed_same_decisions_and_another_seed_others() -> None:
    shown = [Shown(f"i{j}") for j in range(10)]

    def decisions(seed: int) -> list[Any]:
        m = model(seed=seed)
        out = []
        for n in range(200):
            visit = m.visit(n, n / 200)
            out.append((visit, m.respond(n, visit.user, shown, n / 200)))
        return out

    assert decisions(5) == decisions(5)
    assert decisions(5) != decisions(6)
    # Decisions for request n do not depend on which requests were decided before it.
    m = model(seed=5)
    assert (
        m.respond(7, 3, shown, 0.1) == (m.respond(1, 3, shown, 0.1), m.respond(7, 3, shown, 0.1))[1]
    )


def test_browsing_follows_the_taste_and_carries_no_recommendation() -> None:
    m = model(browse_views=3.0, drift=0.0)
    genre_of = dict(zip(m.catalog.item_ids, m.catalog.genres, strict=True))
    fitting = total = 0
    for n in range(400):
        visit = m.visit(n, 0.0)
        liked = m.preferred(int(m.user_cluster[visit.user]), 0.0)
        for action in visit.browse:
            assert action.delay_s < 0
            assert action.position is None
            if action.kind == "view":
                total += 1
                fitting += genre_of[action.item_id][0] in liked
        for event in to_events(visit.user_id, visit.browse, datetime.now(UTC)):
            assert getattr(event, "recommendation_id", None) is None
    # 80% from the taste plus chance (3 of 8 genres) on the rest.
    assert 0.8 < fitting / total < 0.95
    assert total > 1000


def test_a_list_in_taste_beats_a_random_one_by_far() -> None:
    m = model(drift=0.0)
    fits, _ = in_and_out(m, 0, 0.0)
    assert m.expected_clicks(0, [fits] * 10, 0.0) > 2 * m.expected_random_clicks(0, 10, 0.0)


def test_active_users_come_more_often() -> None:
    m = model(users=200)
    counts = Counter(m.visit(n, 0.0).user for n in range(5000))
    heaviest = int(np.argmax(m.activity))
    assert counts[heaviest] > 5000 / 200 * 2


def test_a_catalog_without_two_genres_is_refused() -> None:
    with pytest.raises(SimulationError, match="two genres"):
        BehaviourModel(Catalog(["a", "b"], [("Drama",), ()], np.full(2, 0.5)))
    with pytest.raises(ValueError, match="shift_at"):
        BehaviourConfig(shift_at=1.5)


def test_the_schedule_keeps_to_both_bounds() -> None:
    by_count = list(schedule(RunOptions(max_requests=5, max_seconds=100, rate=10)))
    assert by_count == [(n, n / 10) for n in range(5)]
    by_time = list(schedule(RunOptions(max_requests=1000, max_seconds=2, rate=10)))
    assert len(by_time) == 20
    assert by_time[-1][1] < 2
    options = RunOptions(max_requests=100, max_seconds=10)
    assert run_progress(50, 1.0, options) == 0.5
    assert run_progress(10, 8.0, options) == 0.8
    assert run_progress(100, 20.0, options) == 1.0


# -- the runner, against an in-memory API ---------------------------------------------------------
class FakeApi:
    """Answers /recommend with the first k catalog items (or a failure every `fail_every`-th
    request) and records every event posted."""

    def __init__(self, fail_every: int = 0, variants: tuple[str | None, ...] = (None,)):
        self.fail_every, self.variants = fail_every, variants
        self.answers: dict[str, list[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            self.events.extend(json.loads(request.content))
            return httpx.Response(202, json={"accepted": 1})
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            if self.calls % (2 * self.fail_every) == 0:
                raise httpx.ReadTimeout("slow", request=request)
            return httpx.Response(503, json={"detail": "down"})
        k = int(request.url.params["k"])
        items = [f"i{j}" for j in range(self.calls % 7, self.calls % 7 + k)]
        rid = str(uuid.uuid4())
        self.answers[rid] = items
        user = request.url.path.rsplit("/", 1)[1]
        body = {
            "recommendation_id": rid,
            "user_id": user,
            "items": [{"item_id": i, "score": 1.0, "genres": []} for i in items],
            "source": "personalized",
            "variant": self.variants[self.calls % len(self.variants)],
        }
        return httpx.Response(200, json=body)


def client(api: FakeApi) -> AsyncRecsysClient:
    return api_client("http://api", None, 10.0, httpx.MockTransport(api))


async def test_the_runner_stops_at_its_request_bound_and_attributes_every_click() -> None:
    api = FakeApi(variants=("control", "random"))
    options = RunOptions(max_requests=120, max_seconds=30, rate=2000, k=5, event_batch=50)
    async with client(api) as c:
        result = await run_respond(c, model(), options)
    assert (result.requests, result.answered, result.stopped_by) == (120, 120, "requests")
    assert api.calls == 120
    assert set(result.tallies) == {"control", "random"}
    assert sum(t.requests for t in result.tallies.values()) == 120
    assert sum(t.impressions for t in result.tallies.values()) == 600
    assert result.events_sent == len(api.events) > 0
    assert not result.errors
    attributed = [e for e in api.events if "recommendation_id" in e]
    clicks = sum(t.clicks for t in result.tallies.values())
    purchases = sum(t.purchases for t in result.tallies.values())
    assert Counter(e["event_type"] for e in attributed) == {"click": clicks, "purchase": purchases}
    for event in attributed:
        assert event["item_id"] in api.answers[event["recommendation_id"]]
    assert len(api.events) - len(attributed) == result.browse_events


async def test_the_runner_stops_at_its_time_bound() -> None:
    options = RunOptions(max_requests=10_000, max_seconds=0.5, rate=40)
    async with client(FakeApi()) as c:
        result = await run_respond(c, model(), options)
    assert result.stopped_by == "time"
    # At most 40/s for 0.5 s; fewer when the machine stalls the loop (a full suite's garbage
    # collection once took 3 s here): the bound is what is asserted, not the pace.
    assert 1 <= result.requests <= 20
    assert result.seconds >= 0.45  # the last request is sent at its scheduled time, not after


async def test_failed_calls_are_counted_and_the_run_goes_on() -> None:
    api = FakeApi(fail_every=5)
    options = RunOptions(max_requests=100, max_seconds=30, rate=5000)
    async with client(api) as c:
        result = await run_respond(c, model(), options)
    assert result.requests == result.finished == 100
    assert result.answered == 80
    assert result.errors == {"GET /recommend 503": 10, "GET /recommend ReadTimeout": 10}
    assert result.rejected == 0
    assert result.first_error is not None


async def test_an_unreadable_answer_is_counted_and_the_key_is_sent() -> None:
    keys: set[str | None] = set()

    def api(request: httpx.Request) -> httpx.Response:
        keys.add(request.headers.get("X-API-Key"))
        if request.url.path == "/events":
            return httpx.Response(401, json={"detail": "missing or wrong X-API-Key header"})
        return httpx.Response(200, json={"items": "not a list"})

    transport = httpx.MockTransport(api)
    async with api_client("http://api", "k3y", 1.0, transport) as c:
        result = await run_respond(c, model(browse_views=2.0), RunOptions(max_requests=10))
    assert keys == {"k3y"}
    assert result.answered == 0
    assert result.errors["GET /recommend unreadable"] == 10
    assert result.errors["POST /events 401"] >= 1
    assert result.rejected == result.errors["POST /events 401"]
    async with api_client("http://api", None, 1.0, transport) as c:
        await c.http.get("/recommend/x")
    assert None in keys
