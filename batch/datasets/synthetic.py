"""A synthetic e-commerce event log with the structure real ones have, reproducible from a seed.

- Items have 1-3 of 18 genres and a Zipf-like popularity (a random rank r gets weight r^-s).
- Users belong to taste clusters; a cluster prefers a few genres, and its preferences drift:
  over the time span one preferred genre is gradually replaced by another.
- Users differ in activity (log-normal); they act in sessions of views a few seconds apart.
- Funnel: each view may lead to a click on the same item, and a click to a purchase, each
  strictly later than the step before.

Everything is vectorized numpy, generated in chunks of sessions, so 10M events over 1M users
and 50k items fit comfortably in a few GiB of memory. Each component draws from its own
random stream spawned from the seed, so changing, say, the event count leaves the items and
users unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batch.data import Dataset, DatasetError
from core.rules import EVENT_WEIGHTS

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Sports", "Thriller",
    "War", "Western",
)  # fmt: skip
FUNNEL = ("view", "click", "purchase")
# Delays (seconds) between funnel steps; bounded so that a session's length is known up front.
_CLICK_DELAY = (1, 30)
_PURCHASE_DELAY = (5, 300)
_VIEWS_PER_CHUNK = 1_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of `generate_synthetic`; the defaults make a small, quick dataset."""

    n_users: int = 2_000
    n_items: int = 500
    n_events: int = 50_000
    seed: int = 0
    n_clusters: int = 8
    genres_per_cluster: int = 3
    cluster_affinity: float = 0.8  # share of views drawn from the cluster's current genres
    popularity_exponent: float = 1.0  # Zipf exponent s of item popularity
    drift: float = 1.0  # 0: fixed tastes; 1: one preferred genre fully replaced by the end
    start_ts: int = 1_672_531_200  # 2023-01-01T00:00:00Z
    span_days: float = 90.0
    mean_session_views: float = 6.0
    mean_view_gap_s: float = 40.0
    click_rate: float = 0.12  # P(click | view)
    purchase_rate: float = 0.25  # P(purchase | click)
    first_year: int = 1980
    last_year: int = 2024
    time_buckets: int = 16  # steps of the drift (item distributions are recomputed per step)

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_events", "n_clusters", "time_buckets"):
            if getattr(self, name) < 1:
                raise DatasetError(f"synthetic: {name} must be at least 1")
        if not 1 <= self.genres_per_cluster < len(GENRES):
            raise DatasetError(f"synthetic: genres_per_cluster must be in 1..{len(GENRES) - 1}")
        for name in ("cluster_affinity", "drift", "click_rate", "purchase_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DatasetError(f"synthetic: {name} must be in [0, 1]")
        if self.span_days <= 0 or self.mean_session_views < 1 or self.mean_view_gap_s <= 0:
            raise DatasetError("synthetic: span_days, mean_view_gap_s > 0; mean_session_views >= 1")
        if self.first_year > self.last_year:
            raise DatasetError("synthetic: first_year must not be after last_year")

    @classmethod
    def from_spec(cls, spec: str) -> SyntheticConfig:
        """Parse "users=1000,items=200,events=10000,seed=3" (any field; users/items/events
        stand for n_users/n_items/n_events)."""
        aliases = {"users": "n_users", "items": "n_items", "events": "n_events"}
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, int | float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            given, sep, raw = part.partition("=")
            key = aliases.get(given.strip(), given.strip())
            if not sep or key not in types:
                raise DatasetError(
                    f"synthetic: cannot read {part!r}; expected key=value, key one of "
                    "users, items, events, " + ", ".join(types)
                )
            try:
                values[key] = int(raw.replace("_", "")) if types[key] == "int" else float(raw)
            except ValueError:
                raise DatasetError(
                    f"synthetic: {given.strip()} must be a number, got {raw!r}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _World:
    """Everything that does not depend on the event count."""

    item_genres: np.ndarray  # (n_items, n_genres) bool
    item_cdfs: np.ndarray  # (n_clusters * time_buckets, n_items) float64 cumulative
    user_cluster: np.ndarray  # (n_users,) int32
    user_cdf: np.ndarray  # (n_users,) float64 cumulative activity
    start_genres: np.ndarray  # (n_clusters, genres_per_cluster) genre indices
    end_genres: np.ndarray  # (n_clusters, genres_per_cluster)


def generate_synthetic(config: SyntheticConfig | None = None) -> Dataset:
    """Generate a synthetic event log, deterministic for a given config (seed included).

    Parameters
    ----------
    config
        Sizes, seed and behaviour knobs; default `SyntheticConfig()`.

    Returns
    -------
    Dataset
        interactions: exactly `n_events` rows sorted by ts (epoch seconds over `span_days`
        from `start_ts`), event_type view/click/purchase, weight from `EVENT_WEIGHTS`, plus a
        `session_id` column. items: "i<k>" ids, titles "Item <k>", 1-3 genres, a year.
        users: every "u<k>" with its taste `cluster`.
    """
    config = config or SyntheticConfig()
    item_rng, taste_rng, user_rng, event_rng, year_rng = map(
        np.random.default_rng, _streams(config)
    )
    world = _build_world(config, item_rng, taste_rng, user_rng)
    users, items, ts, kinds, sessions = _events(config, world, event_rng)

    order = np.argsort(ts, kind="stable")
    users, items, ts, kinds, sessions = (
        users[order],
        items[order],
        ts[order],
        kinds[order],
        sessions[order],
    )
    del order
    weights = np.array([EVENT_WEIGHTS[k] for k in FUNNEL], dtype=np.float32)
    interactions = pd.DataFrame(
        {
            "user_id": _take_ids("u", config.n_users, users),
            "item_id": _take_ids("i", config.n_items, items),
            "ts": ts + np.int64(config.start_ts),
            "event_type": pd.array(pa.array(FUNNEL).take(pa.array(kinds)), dtype="str"),
            "weight": weights[kinds],
            "session_id": sessions,
        }
    )
    return Dataset(
        f"synthetic-{config.n_users}x{config.n_items}x{config.n_events}-seed{config.seed}",
        interactions,
        _items_frame(config, world, year_rng),
        pd.DataFrame(
            {"user_id": _take_ids("u", config.n_users, None), "cluster": world.user_cluster}
        ),
    )


def cluster_tastes(config: SyntheticConfig) -> pd.DataFrame:
    """Each cluster's preferred genres at the start and at the end of the span (for checks)."""
    start, end = _tastes(config, np.random.default_rng(_streams(config)[1]))
    return pd.DataFrame(
        {
            "cluster": np.arange(config.n_clusters),
            "start_genres": [tuple(GENRES[g] for g in row) for row in start],
            "end_genres": [tuple(GENRES[g] for g in row) for row in end],
        }
    )


def _streams(config: SyntheticConfig) -> list[np.random.SeedSequence]:
    """Independent random streams: items, tastes, users, events, item years."""
    return np.random.SeedSequence(config.seed).spawn(5)


def _build_world(
    config: SyntheticConfig,
    item_rng: np.random.Generator,
    taste_rng: np.random.Generator,
    user_rng: np.random.Generator,
) -> _World:
    n_genres = len(GENRES)
    # 1-3 genres per item, common genres more likely: Gumbel-top-k samples without replacement
    # in proportion to each genre's weight, for all items at once.
    genre_weight = 1.0 / np.sqrt(np.arange(1, n_genres + 1))
    keys = np.log(genre_weight) + item_rng.gumbel(size=(config.n_items, n_genres))
    ranked = np.argsort(-keys, axis=1)
    n_item_genres = item_rng.choice([1, 2, 3], size=config.n_items, p=[0.5, 0.35, 0.15])
    item_genres = np.zeros((config.n_items, n_genres), dtype=bool)
    for k in range(3):
        has = n_item_genres > k
        item_genres[np.flatnonzero(has), ranked[has, k]] = True
    popularity = (
        1.0 / item_rng.permutation(np.arange(1, config.n_items + 1)) ** config.popularity_exponent
    )

    start, end = _tastes(config, taste_rng)
    global_share = popularity / popularity.sum()
    cdfs = np.empty((config.n_clusters * config.time_buckets, config.n_items))
    for bucket in range(config.time_buckets):
        progress = config.drift * (bucket + 0.5) / config.time_buckets
        for cluster in range(config.n_clusters):
            taste = np.zeros(n_genres)
            taste[start[cluster]] += 1.0 - progress
            taste[end[cluster]] += progress
            match = (item_genres * taste).max(axis=1)  # how well each item fits the taste now
            fitting = popularity * match
            share = (1.0 - config.cluster_affinity) * global_share
            if fitting.sum() > 0:
                share = share + config.cluster_affinity * fitting / fitting.sum()
            else:
                share = global_share
            cdf = np.cumsum(share)
            cdfs[cluster * config.time_buckets + bucket] = cdf / cdf[-1]

    user_cluster = user_rng.integers(0, config.n_clusters, size=config.n_users, dtype=np.int32)
    activity = np.cumsum(user_rng.lognormal(0.0, 1.0, size=config.n_users))
    return _World(item_genres, cdfs, user_cluster, activity / activity[-1], start, end)


def _tastes(config: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Preferred genres per cluster; by the end the last is swapped for one not liked before."""
    k = config.genres_per_cluster
    picks = np.argsort(rng.random((config.n_clusters, len(GENRES))), axis=1)[:, : k + 1]
    start = picks[:, :k]
    end = np.concatenate([picks[:, : k - 1], picks[:, k : k + 1]], axis=1)
    return start, end


def _events(
    config: SyntheticConfig, world: _World, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, ts offset, funnel step, session) per row, in generation order."""
    span_s = int(config.span_days * 86_400)
    rows_per_view = 1.0 + config.click_rate * (1.0 + config.purchase_rate)
    chunks: list[tuple[np.ndarray, ...]] = []
    produced, session_base = 0, 0
    while produced < config.n_events:
        views_wanted = min(
            _VIEWS_PER_CHUNK, math.ceil((config.n_events - produced) / rows_per_view * 1.02) + 1
        )
        n_sessions = max(1, math.ceil(views_wanted / config.mean_session_views))
        chunk = _session_chunk(config, world, rng, n_sessions, session_base, span_s)
        session_base += n_sessions
        rows = len(chunk[0])
        if produced + rows > config.n_events:
            chunk = tuple(column[: config.n_events - produced] for column in chunk)
            rows = config.n_events - produced
        chunks.append(chunk)
        produced += rows
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))  # type: ignore[return-value]


def _session_chunk(
    config: SyntheticConfig,
    world: _World,
    rng: np.random.Generator,
    n_sessions: int,
    session_base: int,
    span_s: int,
) -> tuple[np.ndarray, ...]:
    """Rows of `n_sessions` sessions, each view followed by its click and purchase (if any)."""
    session_user = np.searchsorted(world.user_cdf, rng.random(n_sessions), side="right").astype(
        np.int32
    )
    session_user = np.minimum(session_user, config.n_users - 1)
    views_per_session = rng.geometric(1.0 / config.mean_session_views, size=n_sessions)
    view_session = np.repeat(np.arange(n_sessions), views_per_session)
    gaps = 1 + rng.exponential(config.mean_view_gap_s, size=len(view_session)).astype(np.int64)
    offsets = np.cumsum(gaps)
    first_row = np.cumsum(views_per_session) - views_per_session
    offsets -= offsets[first_row][view_session]  # the first view of a session is at offset 0
    duration = offsets[first_row + views_per_session - 1] + _CLICK_DELAY[1] + _PURCHASE_DELAY[1]
    room = np.maximum(span_s - 1 - duration, 0)
    session_start = (rng.random(n_sessions) * room).astype(np.int64)
    view_ts = session_start[view_session] + offsets

    view_user = session_user[view_session]
    cluster = world.user_cluster[view_user]
    bucket = np.minimum(view_ts * config.time_buckets // span_s, config.time_buckets - 1)
    view_item = _draw_items(
        world.item_cdfs, cluster.astype(np.int64) * config.time_buckets + bucket, rng
    )

    clicked = rng.random(len(view_ts)) < config.click_rate
    purchased = clicked & (rng.random(len(view_ts)) < config.purchase_rate)
    click_ts = view_ts + rng.integers(*_CLICK_DELAY, endpoint=True, size=len(view_ts))
    purchase_ts = click_ts + rng.integers(*_PURCHASE_DELAY, endpoint=True, size=len(view_ts))
    # Rows grouped per view (view, its click, its purchase) so that cutting the log at any row
    # never keeps a purchase without its click.
    depth = 1 + clicked.astype(np.int64) + purchased
    owner = np.repeat(np.arange(len(view_ts)), depth)
    step = np.arange(len(owner)) - np.repeat(np.cumsum(depth) - depth, depth)
    ts = np.choose(step, [view_ts[owner], click_ts[owner], purchase_ts[owner]])
    return (
        view_user[owner],
        view_item[owner],
        ts,
        step.astype(np.int8),
        (session_base + view_session[owner]).astype(np.int64),
    )


def _draw_items(cdfs: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per row from the item distribution of the row's (cluster, time bucket) group."""
    items = np.empty(len(group), dtype=np.int32)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(len(cdfs) + 1))
    n_items = cdfs.shape[1]
    for g in range(len(cdfs)):
        rows = order[bounds[g] : bounds[g + 1]]
        if len(rows):
            picked = np.searchsorted(cdfs[g], rng.random(len(rows)), side="right")
            items[rows] = np.minimum(picked, n_items - 1)
    return items


def _items_frame(config: SyntheticConfig, world: _World, rng: np.random.Generator) -> pd.DataFrame:
    numbers = np.arange(1, config.n_items + 1)
    genre_names = np.array(GENRES, dtype=object)
    return pd.DataFrame(
        {
            "item_id": _take_ids("i", config.n_items, None),
            "title": pd.array([f"Item {k}" for k in numbers], dtype="str"),
            "genres": pd.Series(
                [tuple(genre_names[row]) for row in world.item_genres], dtype=object
            ),
            "year": pd.array(
                rng.integers(
                    config.first_year, config.last_year, endpoint=True, size=config.n_items
                ),
                dtype="Int64",
            ),
        }
    )


def _take_ids(prefix: str, count: int, indices: np.ndarray | None) -> pd.Series:
    """Ids "<prefix>1".."<prefix><count>" (Arrow strings: compact for millions of rows)."""
    ids = pc.binary_join_element_wise(
        prefix, pa.array(np.arange(1, count + 1)).cast(pa.string()), ""
    )
    if indices is not None:
        ids = ids.take(pa.array(indices))
    return pd.Series(pd.array(ids, dtype="str"))
