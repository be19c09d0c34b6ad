"""The event simulator: realistic interaction events published straight to Kafka.

Synthetic users each prefer one or two of the catalog's genres; they browse in sessions and go
down a view -> click -> purchase funnel, so their events agree with the catalog and a model can
learn from them. Alternatively a dataset's rows are replayed in time order, faster or slower.
Every run is bounded in count and in time, and publishes only to the configured brokers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from core import keys
from core.model_version import active_version, as_bytes
from schemas import AnyEvent, EventType, encode_event, event_key, new_event, topic_for
from schemas.events import stream_event_type

TICK_S = 0.05  # events are released in small bursts, 20 per second, to hold the rate steady


@dataclass(frozen=True)
class Catalog:
    item_ids: list[str]
    genres: list[tuple[str, ...]]
    popularity: np.ndarray  # sampling weights

    def by_genre(self) -> dict[str, np.ndarray]:
        groups: dict[str, list[int]] = {}
        for row, genres in enumerate(self.genres):
            for genre in genres:
                groups.setdefault(genre, []).append(row)
        return {genre: np.asarray(rows) for genre, rows in groups.items()}


class SimulationError(RuntimeError):
    """The simulator cannot run; the message says what to do."""


async def load_catalog(redis: aioredis.Redis) -> Catalog:
    """The active model's items, their genres and popularity (what users can interact with)."""
    version = await active_version(redis)
    if version is None:
        raise SimulationError("no model is published yet: run `recsys train` (or `recsys up`)")
    raw = await redis.hgetall(keys.item_payloads(version))
    item_ids, genres, popularity = [], [], []
    for key, value in raw.items():
        payload = json.loads(as_bytes(value))
        item_ids.append(as_bytes(key).decode())
        genres.append(tuple(payload.get("genres") or ()))
        popularity.append(float(payload.get("popularity") or 0) + 1.0)
    weights = np.asarray(popularity)
    return Catalog(item_ids, genres, weights / weights.sum())


@dataclass
class TasteModel:
    """Users with favourite genres, sessions and a view -> click -> purchase funnel."""

    catalog: Catalog
    users: int
    seed: int = 0
    taste_share: float = 0.8  # share of a user's views that go to their favourite genres
    click_rate: float = 0.3
    purchase_rate: float = 0.25
    _rng: np.random.Generator = field(init=False)
    _tastes: list[np.ndarray] = field(init=False)
    _activity: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        groups = self.catalog.by_genre()
        names = sorted(groups)
        if not names:
            groups, names = {"any": np.arange(len(self.catalog.item_ids))}, ["any"]
        genre_weight = np.asarray([len(groups[g]) for g in names], dtype=float)
        genre_weight /= genre_weight.sum()
        self._tastes = []
        for _ in range(self.users):
            favourites = self._rng.choice(
                len(names), size=min(2, len(names)), replace=False, p=genre_weight
            )
            self._tastes.append(np.concatenate([groups[names[f]] for f in favourites]))
        # A few users are far more active than most, as in real traffic.
        activity = self._rng.zipf(1.5, size=self.users).astype(float)
        self._activity = activity / activity.sum()

    def _pick_item(self, user: int) -> int:
        if self._rng.random() < self.taste_share:
            rows = self._tastes[user]
            weights = self.catalog.popularity[rows]
            return int(rows[self._rng.choice(len(rows), p=weights / weights.sum())])
        return int(self._rng.choice(len(self.catalog.item_ids), p=self.catalog.popularity))

    def session(self) -> Iterator[tuple[str, str, EventType]]:
        """One browsing session: a user views a few items, clicks some, buys fewer."""
        user = int(self._rng.choice(self.users, p=self._activity))
        for _ in range(int(self._rng.integers(1, 6))):
            item = self.catalog.item_ids[self._pick_item(user)]
            yield f"sim-u{user}", item, "view"
            if self._rng.random() < self.click_rate:
                yield f"sim-u{user}", item, "click"
                if self._rng.random() < self.purchase_rate:
                    yield f"sim-u{user}", item, "purchase"

    def events(self) -> Iterator[AnyEvent]:
        while True:
            session_id = f"s{self._rng.integers(1 << 40):x}"
            for user, item, kind in self.session():
                yield new_event(kind, user, item, session_id=session_id)


@dataclass
class RunStats:
    sent: int = 0
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_error: str | None = None

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def at_rate(events: Iterator[AnyEvent], rate: float) -> Iterator[tuple[float, AnyEvent]]:
    """Schedule events evenly: the n-th is due n / rate seconds after the start."""
    for n, event in enumerate(events):
        yield n / rate, event


async def publish_scheduled(
    producer: AIOKafkaProducer,
    schedule: Iterator[tuple[float, AnyEvent]],
    max_events: int,
    max_seconds: float,
    on_progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Publish each event when it is due (open loop), until `max_events` or `max_seconds`.

    Sends are not awaited one by one: each tick's sends are settled together, and a failed
    send is counted as an error (never silently dropped from the figures).
    """
    stats = RunStats()
    upcoming = next(schedule, None)
    while upcoming is not None and stats.sent + stats.errors < max_events:
        elapsed = stats.seconds
        if elapsed >= max_seconds:
            break
        pending: list[asyncio.Future[object]] = []
        while upcoming is not None and upcoming[0] <= elapsed + TICK_S:
            if stats.sent + stats.errors + len(pending) >= max_events:
                break
            event = upcoming[1]
            try:
                pending.append(
                    await producer.send(
                        topic_for(event.event_type), encode_event(event), key=event_key(event)
                    )
                )
            except Exception as exc:
                stats.errors += 1
                stats.first_error = stats.first_error or repr(exc)
            upcoming = next(schedule, None)
        results = await asyncio.gather(*pending, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        stats.sent += len(results) - len(failed)
        stats.errors += len(failed)
        if failed and stats.first_error is None:
            stats.first_error = repr(failed[0])
        if on_progress:
            on_progress(stats)
        if upcoming is not None:
            await asyncio.sleep(max(0.0, min(TICK_S, upcoming[0] - stats.seconds)))
    await producer.flush()
    return stats


def replay_schedule(
    interactions: pd.DataFrame, speed: float, keep_timestamps: bool = True
) -> Iterator[tuple[float, AnyEvent]]:
    """A dataset's rows as events in time order, due `speed` times faster than they happened.

    MovieLens ratings become purchases (the user consumed the film). With `keep_timestamps`
    the events carry their original time, so event-time windows and trending follow the data;
    otherwise they are stamped when they are created.
    """
    rows = interactions.sort_values("ts", kind="stable")
    first_ts = int(rows["ts"].iloc[0])
    columns = rows[["user_id", "item_id", "ts", "event_type"]].itertuples(index=False)
    for user, item, ts, kind in columns:
        event_type = stream_event_type(str(kind))
        stamp = datetime.fromtimestamp(int(ts), UTC) if keep_timestamps else None
        yield (int(ts) - first_ts) / speed, new_event(event_type, str(user), str(item), ts=stamp)
