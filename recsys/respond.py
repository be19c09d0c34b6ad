"""Simulated users who respond to what they are shown: `recsys simulate --respond`.

Two layers. `BehaviourModel` is pure and seeded (no I/O): users in taste clusters that prefer a
few of the catalog's genres (the synthetic generator's clusters, with its drift and an optional
abrupt shift), who examine a shown list with a position bias, click what fits their taste now
more often than what does not, sometimes buy what they clicked, and also browse on their own.
`run_respond` drives it against the API: GET /recommend for each simulated request, the
decisions as click and purchase events carrying the answer's `recommendation_id`, and the
browsing, all through POST /events; it tallies what each experiment arm served and got.

Decisions for request n depend only on (seed, n, the list shown, the run's progress), never on
the order in which concurrent answers arrive. docs/simulator.md describes the model and what a
run does and does not prove.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import ValidationError

from batch.datasets.synthetic import SyntheticConfig
from recsys.client import NO_RETRY, ApiError, AsyncRecsysClient, TransportError
from recsys.simulator import Catalog, SimulationError
from schemas import AnyEvent, new_event

_SYNTHETIC = SyntheticConfig()  # the generator's defaults, shared where the ideas are shared
Kind = Literal["view", "click", "purchase"]


@dataclass(frozen=True)
class BehaviourConfig:
    """The hidden behaviour of the simulated users; every probability is a parameter here.

    The defaults make a model that has learnt the users' tastes clearly beat a list of random
    items: at k=10 an in-taste list gets about 0.35 x 2.9 ~ 1 click, a random one about 0.4.
    """

    users: int = 1000
    seed: int = 0
    user_prefix: str = "sim-r"  # user ids are f"{user_prefix}{n}"
    n_clusters: int = _SYNTHETIC.n_clusters
    genres_per_cluster: int = _SYNTHETIC.genres_per_cluster  # fewer if the catalog has few
    drift: float = _SYNTHETIC.drift  # 0: fixed; 1: one preferred genre replaced by the end
    shift_at: float | None = None  # fraction of the run at which every taste is replaced
    activity_sigma: float = 1.0  # log-normal spread of how often users come (as the generator)
    position_eta: float = 1.0  # position p (0-based) is examined with probability (1+p)^-eta
    click_in_taste: float = 0.35  # P(click | examined, item fully in the current taste)
    click_out_of_taste: float = 0.03  # P(click | examined, item in none of the tastes)
    purchase_rate: float = _SYNTHETIC.purchase_rate  # P(purchase | click)
    browse_views: float = 1.0  # mean views a user browses on their own before a request
    browse_affinity: float = _SYNTHETIC.cluster_affinity  # share of browsed items from taste
    browse_click_rate: float = _SYNTHETIC.click_rate  # P(click | browsed view)
    click_delay_s: tuple[float, float] = (1.0, 10.0)  # a click's time after its request
    purchase_delay_s: tuple[float, float] = (5.0, 30.0)  # a purchase's time after its click
    browse_gap_s: float = 5.0  # seconds between browsed views, which end at the request

    def __post_init__(self) -> None:
        if self.users < 1 or self.n_clusters < 1 or self.genres_per_cluster < 1:
            raise ValueError("users, n_clusters and genres_per_cluster must be at least 1")
        for name in ("drift", "click_in_taste", "click_out_of_taste", "purchase_rate",
                     "browse_affinity", "browse_click_rate"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.shift_at is not None and not 0.0 <= self.shift_at <= 1.0:
            raise ValueError("shift_at must be in [0, 1]")
        if self.position_eta < 0 or self.browse_views < 0 or self.activity_sigma < 0:
            raise ValueError("position_eta, browse_views and activity_sigma must be >= 0")


@dataclass(frozen=True)
class Action:
    """One thing a simulated user does, `delay_s` seconds after (or, if < 0, before) the
    request; `position` is where the item was shown, None when browsed."""

    kind: Kind
    item_id: str
    delay_s: float
    position: int | None = None


@dataclass(frozen=True)
class Visit:
    """Request n: who asks, and what they browsed on their own just before."""

    n: int
    user: int
    user_id: str
    browse: tuple[Action, ...]


@dataclass(frozen=True)
class Shown:
    """One item of an answer, as the user sees it (its genres when the catalog lacks it)."""

    item_id: str
    genres: tuple[str, ...] = ()


class BehaviourModel:
    """Pure, seeded user behaviour over a catalog (see `BehaviourConfig`)."""

    def __init__(self, catalog: Catalog, config: BehaviourConfig | None = None) -> None:
        self.catalog = catalog
        self.config = config = config or BehaviourConfig()
        self.genres = sorted({g for genres in catalog.genres for g in genres})
        if len(self.genres) < 2:
            raise SimulationError("the catalog needs items of at least two genres for tastes")
        column = {g: j for j, g in enumerate(self.genres)}
        self.row_of = {item: row for row, item in enumerate(catalog.item_ids)}
        self.item_genres = np.zeros((len(catalog.item_ids), len(self.genres)), dtype=bool)
        for row, genres in enumerate(catalog.genres):
            self.item_genres[row, [column[g] for g in genres]] = True
        self._column = column

        rng = np.random.default_rng([config.seed, 0])
        k = min(config.genres_per_cluster, len(self.genres) - 1)
        # Genres are picked in proportion to how many items they have (Gumbel-top-k: a
        # weighted permutation per cluster), so that no cluster likes only a handful of items.
        # As in the synthetic generator, the k-th preferred genre drifts to the (k+1)-th; the
        # shift replaces all k by genres liked by neither (as far as the catalog has them).
        size = self.item_genres.sum(axis=0).astype(float)
        keys = np.log(size) + rng.gumbel(size=(config.n_clusters, len(self.genres)))
        picks = np.argsort(-keys, axis=1)
        self.start = picks[:, :k]
        self.drift_to = picks[:, k]
        after = picks[:, k + 1 : 2 * k + 1] if len(self.genres) >= 2 * k + 1 else picks[:, k:]
        self.shifted = after[:, :k]
        self.user_cluster = rng.integers(0, config.n_clusters, size=config.users)
        activity = rng.lognormal(0.0, config.activity_sigma, size=config.users)
        self.activity = activity / activity.sum()

    # -- tastes ------------------------------------------------------------------------------
    def shifted_at(self, progress: float) -> bool:
        shift_at = self.config.shift_at
        return shift_at is not None and progress >= shift_at

    def taste(self, cluster: int, progress: float) -> np.ndarray:
        """Weight in [0, 1] of each genre (`self.genres` order) in the cluster's taste now."""
        weights = np.zeros(len(self.genres))
        if self.shifted_at(progress):
            weights[self.shifted[cluster]] = 1.0
            return weights
        moved = self.config.drift * min(max(progress, 0.0), 1.0)
        weights[self.start[cluster]] = 1.0
        weights[self.start[cluster][-1]] = 1.0 - moved
        weights[self.drift_to[cluster]] = moved
        return weights

    def preferred(self, cluster: int, progress: float) -> set[str]:
        """The genres the cluster mostly likes now (weight at least one half)."""
        taste = self.taste(cluster, progress)
        return {g for g, w in zip(self.genres, taste, strict=True) if w >= 0.5}

    def match(self, user: int, shown: Sequence[Shown], progress: float) -> np.ndarray:
        """How well each shown item fits the user's taste now: its best genre's weight."""
        taste = self.taste(int(self.user_cluster[user]), progress)
        out = np.zeros(len(shown))
        for i, item in enumerate(shown):
            row = self.row_of.get(item.item_id)
            if row is not None:
                out[i] = taste[self.item_genres[row]].max(initial=0.0)
            else:
                columns = [self._column[g] for g in item.genres if g in self._column]
                out[i] = taste[columns].max(initial=0.0)
        return out

    # -- responses ---------------------------------------------------------------------------
    def examine_probability(self, positions: np.ndarray | int) -> np.ndarray:
        return (1.0 + np.asarray(positions, dtype=float)) ** -self.config.position_eta

    def click_probability(self, match: np.ndarray) -> np.ndarray:
        low, high = self.config.click_out_of_taste, self.config.click_in_taste
        return low + (high - low) * np.asarray(match, dtype=float)

    def expected_clicks(self, user: int, shown: Sequence[Shown], progress: float) -> float:
        """Clicks the user makes on this list, on average."""
        p = self.examine_probability(np.arange(len(shown)))
        return float((p * self.click_probability(self.match(user, shown, progress))).sum())

    def expected_random_clicks(self, user: int, k: int, progress: float) -> float:
        """Clicks on average on k items drawn uniformly from the catalog (a random arm)."""
        taste = self.taste(int(self.user_cluster[user]), progress)
        match = (self.item_genres * taste).max(axis=1)
        p = self.examine_probability(np.arange(k))
        return float(p.sum() * self.click_probability(match).mean())

    def respond(self, n: int, user: int, shown: Sequence[Shown], progress: float) -> list[Action]:
        """What the user of request n does with the list they were shown."""
        rng = np.random.default_rng([self.config.seed, n, 2])
        examined = rng.random(len(shown)) < self.examine_probability(np.arange(len(shown)))
        clicked = examined & (
            rng.random(len(shown)) < self.click_probability(self.match(user, shown, progress))
        )
        bought = clicked & (rng.random(len(shown)) < self.config.purchase_rate)
        click_delay = rng.uniform(*self.config.click_delay_s, size=len(shown))
        buy_delay = click_delay + rng.uniform(*self.config.purchase_delay_s, size=len(shown))
        actions = []
        for p in map(int, np.flatnonzero(clicked)):
            item = shown[p].item_id
            actions.append(Action("click", item, float(click_delay[p]), p))
            if bought[p]:
                actions.append(Action("purchase", item, float(buy_delay[p]), p))
        return actions

    # -- visits ------------------------------------------------------------------------------
    def user_id(self, user: int) -> str:
        return f"{self.config.user_prefix}{user}"

    def visit(self, n: int, progress: float) -> Visit:
        """Request n's user (the active ones more often) and what they browsed before it."""
        rng = np.random.default_rng([self.config.seed, n, 1])
        user = int(rng.choice(self.config.users, p=self.activity))
        return Visit(n, user, self.user_id(user), tuple(self.browse(rng, user, progress)))

    def browse(self, rng: np.random.Generator, user: int, progress: float) -> list[Action]:
        """A few views of items from the user's taste (or popular ones), some clicked and
        bought; the last view comes `browse_gap_s` before the request."""
        config = self.config
        views = int(rng.poisson(config.browse_views))
        if not views:
            return []
        taste = self.taste(int(self.user_cluster[user]), progress)
        fitting = self.catalog.popularity * (self.item_genres * taste).max(axis=1)
        share = (1.0 - config.browse_affinity) * self.catalog.popularity
        if fitting.sum() > 0:
            share = share + config.browse_affinity * fitting / fitting.sum()
        rows = rng.choice(len(share), size=views, p=share / share.sum())
        actions = []
        for j, row in enumerate(rows):
            item = self.catalog.item_ids[int(row)]
            at = -config.browse_gap_s * (views - j)
            actions.append(Action("view", item, at))
            if rng.random() < config.browse_click_rate:
                actions.append(Action("click", item, at + 1.0))
                if rng.random() < config.purchase_rate:
                    actions.append(Action("purchase", item, at + 2.0))
        return actions


def to_events(
    user_id: str,
    actions: Sequence[Action],
    at: datetime,
    recommendation_id: str | None = None,
) -> list[AnyEvent]:
    """The actions as events stamped relative to `at` (when the answer arrived, or for
    browsing, when the visit began); clicks and
    purchases of a shown list carry the answer's `recommendation_id`."""
    events = []
    for action in actions:
        fields: dict[str, Any] = {}
        if recommendation_id is not None and action.kind != "view":
            fields["recommendation_id"] = recommendation_id
        ts = at + timedelta(seconds=action.delay_s)
        events.append(new_event(action.kind, user_id, action.item_id, ts=ts, **fields))
    return events


# -- the runner --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """Bounds and pacing of a run: it stops at `max_requests` or `max_seconds`, whichever
    comes first, and never has more than `concurrency` requests in flight."""

    max_requests: int = 1000
    max_seconds: float = 60.0
    rate: float = 20.0  # requests per second (open loop)
    k: int = 10
    concurrency: int = 32
    timeout_s: float = 5.0  # per HTTP call; in-flight calls get this long after max_seconds
    event_batch: int = 500  # events per POST /events (the API takes at most 1,000)
    flush_interval_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.k < 1 or self.concurrency < 1:
            raise ValueError("max_requests, k and concurrency must be at least 1")
        if self.max_seconds <= 0 or self.rate <= 0 or self.timeout_s <= 0:
            raise ValueError("max_seconds, rate and timeout_s must be positive")
        if not 1 <= self.event_batch <= 1000:
            raise ValueError("event_batch must be in 1..1000")


def schedule(options: RunOptions) -> Iterator[tuple[int, float]]:
    """(n, due second) of each request: evenly at `rate`, within both bounds."""
    for n in range(options.max_requests):
        due = n / options.rate
        if due >= options.max_seconds:
            return
        yield n, due


def run_progress(n: int, elapsed_s: float, options: RunOptions) -> float:
    """How far through the run request n is, by whichever bound is nearer (0..1)."""
    return min(1.0, max(n / options.max_requests, elapsed_s / options.max_seconds))


@dataclass
class VariantTally:
    """What one experiment arm (None: no experiment) served and what the users did with it."""

    requests: int = 0
    impressions: int = 0  # items shown
    clicks: int = 0
    clicked_requests: int = 0  # answers with at least one click
    purchases: int = 0
    sources: Counter[str] = field(default_factory=Counter)  # answers by their `source`

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0


@dataclass
class RespondResult:
    """A run's figures. `errors` counts failed calls by "GET /recommend 503", "POST /events
    422", "GET /recommend ReadTimeout" and so on; a failed request is not in any tally."""

    tallies: dict[str | None, VariantTally] = field(default_factory=dict)
    requests: int = 0  # started
    finished: int = 0  # answered, failed or cancelled
    answered: int = 0
    events_sent: int = 0  # accepted by POST /events (202)
    events_failed: int = 0
    browse_events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    seconds: float = 0.0
    stopped_by: Literal["requests", "time"] = "requests"

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        self.first_error = self.first_error or f"{what}: {detail}"

    @property
    def rejected(self) -> int:
        """Calls the API refused as the client's fault (4xx): a bug or a missing key."""
        return sum(n for what, n in self.errors.items() if what.split()[-1].startswith("4"))


def api_client(
    base_url: str,
    api_key: str | None,
    timeout_s: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncRecsysClient:
    """The typed client (`recsys.client`) of the API at `base_url`, sending `api_key` as
    X-API-Key when there is one (`transport`: e.g. `httpx.ASGITransport(app)` for an app in the
    same process). It does not retry: the simulator counts every failed call as it happened."""
    return AsyncRecsysClient(base_url, api_key, timeout_s, NO_RETRY, transport)


def _failure(call: str, exc: ApiError | TransportError | ValidationError) -> tuple[str, str]:
    """How a failed call is tallied: by status, by transport error, or as unreadable."""
    if isinstance(exc, ApiError):
        return f"{call} {exc.status}", str(exc)[:300]
    if isinstance(exc, TransportError):
        return f"{call} {type(exc.__cause__).__name__}", repr(exc.__cause__)
    return f"{call} unreadable", str(exc)[:300]


class _EventSink:
    """Buffers events and posts them to /events in batches, a few posts at a time."""

    def __init__(self, client: AsyncRecsysClient, options: RunOptions, result: RespondResult):
        self.client, self.options, self.result = client, options, result
        self.buffer: list[AnyEvent] = []
        self.posts: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(4)

    def add(self, events: list[AnyEvent]) -> None:
        self.buffer.extend(events)
        while len(self.buffer) >= self.options.event_batch:
            self._post(self.options.event_batch)

    def flush(self) -> None:
        while self.buffer:
            self._post(self.options.event_batch)

    def _post(self, size: int) -> None:
        batch, self.buffer = self.buffer[:size], self.buffer[size:]
        task = asyncio.create_task(self._send(batch))
        self.posts.add(task)
        task.add_done_callback(self.posts.discard)

    async def _send(self, batch: list[AnyEvent]) -> None:
        async with self.slots:
            try:
                await self.client.post_events(batch)
            except (ApiError, TransportError, ValidationError) as exc:
                self.result.events_failed += len(batch)
                self.result.error(*_failure("POST /events", exc))
                return
        self.result.events_sent += len(batch)

    async def close(self) -> None:
        self.flush()
        if self.posts:
            await asyncio.wait(self.posts, timeout=self.options.timeout_s * 2)
        for task in list(self.posts):
            task.cancel()


async def run_respond(
    client: AsyncRecsysClient,
    model: BehaviourModel,
    options: RunOptions,
    on_progress: Callable[[RespondResult], None] | None = None,
) -> RespondResult:
    """Run simulated requests against the API behind `client` until a bound is reached.

    Each request n: its user's browsing goes to POST /events, then GET /recommend/{user}?k=K;
    the user's clicks and purchases of the answer's items are posted with its
    `recommendation_id`, stamped a few seconds after the answer arrived. A 4xx/5xx or a transport
    error is counted in `errors` and the run goes on. Requests are started on schedule (open
    loop) while fewer than `concurrency` are in flight; those still in flight at `max_seconds`
    get `timeout_s` to finish, then are cancelled. Prints nothing; `on_progress` is called
    after every request.
    """
    result = RespondResult()
    sink = _EventSink(client, options, result)
    slots = asyncio.Semaphore(options.concurrency)
    started = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()

    def elapsed() -> float:
        return time.perf_counter() - started

    async def one(n: int) -> None:
        try:
            await _request(
                client, model, options, sink, result, n, run_progress(n, elapsed(), options)
            )
        finally:
            slots.release()
            result.finished += 1
            if on_progress:
                on_progress(result)

    async def flusher() -> None:
        while True:
            await asyncio.sleep(options.flush_interval_s)
            sink.flush()

    flushing = asyncio.create_task(flusher())
    try:
        for n, due in schedule(options):
            wait = due - elapsed()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await asyncio.wait_for(slots.acquire(), options.max_seconds - elapsed())
            except (TimeoutError, ValueError):
                break
            if elapsed() >= options.max_seconds:
                slots.release()
                break
            result.requests += 1
            task = asyncio.create_task(one(n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        result.stopped_by = "requests" if result.requests >= options.max_requests else "time"
        if in_flight:
            _, late = await asyncio.wait(in_flight, timeout=options.timeout_s)
            for task in late:
                task.cancel()
                result.error("GET /recommend cancelled", "still in flight at the time bound")
    finally:
        flushing.cancel()
        await sink.close()
        result.seconds = elapsed()
    return result


async def _request(
    client: AsyncRecsysClient,
    model: BehaviourModel,
    options: RunOptions,
    sink: _EventSink,
    result: RespondResult,
    n: int,
    progress: float,
) -> None:
    visit = model.visit(n, progress)
    now = datetime.now(UTC)
    browsed = to_events(visit.user_id, visit.browse, now)
    result.browse_events += len(browsed)
    sink.add(browsed)
    try:
        answer = await client.recommend(visit.user_id, k=options.k)
    except (ApiError, TransportError, ValidationError) as exc:
        result.error(*_failure("GET /recommend", exc))
        return
    shown = [Shown(i.item_id, tuple(i.genres)) for i in answer.items]
    recommendation_id = str(answer.recommendation_id)
    actions = model.respond(n, visit.user, shown, progress)
    # Clicks follow the answer as the user saw it: from when it arrived, not from when it was
    # asked for (a slow answer would otherwise have clicks stamped before it was given).
    sink.add(to_events(visit.user_id, actions, datetime.now(UTC), recommendation_id))

    result.answered += 1
    tally = result.tallies.setdefault(answer.variant, VariantTally())
    tally.requests += 1
    tally.impressions += len(shown)
    tally.sources[answer.source] += 1
    clicks = sum(a.kind == "click" for a in actions)
    tally.clicks += clicks
    tally.clicked_requests += clicks > 0
    tally.purchases += sum(a.kind == "purchase" for a in actions)
