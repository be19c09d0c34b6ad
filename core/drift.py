"""Drift of the system's inputs: fixed bins, baselines, live sliding-window histograms, PSI.

Pure: no I/O and no clock (every time is passed in), so that each piece is testable alone.

Who writes, who reads:
- `batch.drift_baseline` builds a `Baseline` from a version's training data when the version
  is trained; `batch.publish` stores it, as `Baseline.to_json`, under
  `core.keys.drift_baseline(version)`. A version published before drift monitoring has none:
  readers then report "no baseline" and otherwise carry on.
- The stream worker (`streams.drift`: event types, item popularity and genres, user activity)
  and each API
  process (`api.drift`: the scores of served lists, the ranker's feature rows) load the active
  version's baseline, bin what they see with its bins into a `SlidingWindow`, and every few
  seconds write the window's counts as one `LiveEntry` into the hash `core.keys.DRIFT_LIVE`
  (one field per process: one key, so one slot of a Redis Cluster, read with one HGETALL).
- The API (`api.drift`, `GET /monitoring/drift`, the `recsys_drift_psi` gauges) merges the
  entries of the active version (`merge_live`) and compares them with the baseline (`report`).

Bins are fixed when the baseline is built: categorical ones list their categories; numeric ones
take their edges from the baseline's quantiles, so that each bin holds a fair share of the
baseline (an equal share, up to ties), and a shift shows as live mass moving between bins.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import orjson

# The baseline and live formats; a reader refuses a format it does not know (ValueError).
FORMAT = 1

# PSI takes a logarithm of each bin's live share over its baseline share: a bin empty on either
# side would make it infinite (one unseen category would read as infinite drift, and a bin the
# live sample has not reached yet would too). Shares are floored at EPSILON, which bounds one
# bin's term at about share * ln(share / 1e-4), 0.46 for a 10% bin that empties.
EPSILON = 1e-4

# Distribution names (the `distribution` label of `recsys_drift_psi`).
EVENT_TYPES = "event_types"
ITEM_POPULARITY = "item_popularity"
# The genres of the items users act on (an item of two genres counts in both): what a change of
# taste moves, where popularity and activity may stay as they were.
ITEM_GENRES = "item_genres"
USER_ACTIVITY = "user_activity"
SERVED_SCORES = "served_scores"
# The cosine of each item a user acted on (view, click, purchase) with the vector the user held
# just before (`core.rules.ema_steps`): how well the model foresees what users do. A change of
# taste lowers it at once, even where the mixes of genres and items over all users stay as
# they were (users trading tastes among themselves).
EVENT_SCORES = "event_scores"
RANKER_FEATURE_PREFIX = "ranker_feature:"
WORKER_DISTRIBUTIONS = (EVENT_TYPES, ITEM_POPULARITY, ITEM_GENRES, USER_ACTIVITY, EVENT_SCORES)
# Distributions of the model's own scores. Their training side is in-sample (the batch vectors
# were fit to those very events, so they score them higher than they score anything live), and
# just after a publish the online vectors are still settling from the batch ones: each is
# compared with a live reference instead, the version's first full window once it has been
# active for RECSYS_DRIFT_SETTLE_S (`Reference`). The training side gives the bins.
LIVE_REFERENCED = frozenset({EVENT_SCORES, SERVED_SCORES})

Kind = Literal["categorical", "numeric"]


@dataclass(frozen=True)
class Bins:
    """Fixed bins. Numeric bin i holds `edges[i-1] <= x < edges[i]` (the first and last are
    open-ended): `len(edges) + 1` bins. A categorical value outside `categories` has no bin."""

    kind: Kind
    categories: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()

    @classmethod
    def categorical(cls, categories: Iterable[str]) -> Bins:
        return cls("categorical", categories=tuple(categories))

    @classmethod
    def quantiles(cls, values: np.ndarray, bins: int) -> Bins:
        """Edges at the `bins`-quantiles of `values`; ties merge bins (a value that holds 30% of
        the baseline is one bin, not three empty ones)."""
        if len(values) == 0:
            return cls("numeric")
        cuts = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])
        return cls("numeric", edges=tuple(float(e) for e in np.unique(cuts)))

    def __len__(self) -> int:
        return len(self.categories) if self.kind == "categorical" else len(self.edges) + 1

    def index(self, value: str | float) -> int | None:
        if self.kind == "categorical":
            try:
                return self.categories.index(str(value))
            except ValueError:
                return None
        return bisect_right(self.edges, float(value))

    def counts(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """How many of `values` fall in each bin (values without a bin are left out)."""
        if self.kind == "categorical":
            found = [self.index(v) for v in values]
            known = np.array([i for i in found if i is not None], dtype=np.int64)
        else:
            known = np.searchsorted(np.asarray(self.edges), np.asarray(values, float), "right")
        return np.bincount(known, minlength=len(self)).astype(np.float64)

    def labels(self) -> list[str]:
        if self.kind == "categorical":
            return list(self.categories)
        if not self.edges:
            return ["all"]
        edges = [f"{e:.6g}" for e in self.edges]
        inner = [f"[{a}, {b})" for a, b in pairwise(edges)]
        return [f"< {edges[0]}", *inner, f">= {edges[-1]}"]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"kind": self.kind, "categories": list(self.categories)}
        return {"kind": self.kind, "edges": list(self.edges)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Bins:
        if raw["kind"] == "categorical":
            return cls.categorical(str(c) for c in raw["categories"])
        if raw["kind"] == "numeric":
            return cls("numeric", edges=tuple(float(e) for e in raw["edges"]))
        raise ValueError(f"unknown kind of bins {raw['kind']!r}")


@dataclass(frozen=True)
class Distribution:
    """One baseline distribution: its bins, the share of the baseline in each, and how many
    observations the shares come from."""

    bins: Bins
    shares: tuple[float, ...]
    count: int

    @classmethod
    def of_counts(cls, bins: Bins, counts: np.ndarray) -> Distribution:
        total = float(np.sum(counts))
        shares = counts / total if total > 0 else np.zeros(len(bins))
        return cls(bins, tuple(float(s) for s in shares), int(total))

    @classmethod
    def of_values(cls, bins: Bins, values: Sequence[str] | np.ndarray) -> Distribution:
        return cls.of_counts(bins, bins.counts(values))


@dataclass(frozen=True)
class Baseline:
    """What a version was trained on, per distribution (names: the constants above and
    `RANKER_FEATURE_PREFIX` + a feature of `core.ranking.FEATURES`).

    `event_types`: the event types the worker counts in every distribution (those training
    read); `activity_period_s`: the period of "events per user per period" (user activity)."""

    distributions: dict[str, Distribution]
    event_types: tuple[str, ...]
    activity_period_s: float
    format: int = FORMAT

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": self.format,
                "event_types": list(self.event_types),
                "activity_period_s": self.activity_period_s,
                "distributions": {
                    name: {"bins": d.bins.to_dict(), "shares": list(d.shares), "count": d.count}
                    for name, d in self.distributions.items()
                },
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Baseline:
        data = orjson.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"drift baseline format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            distributions={
                name: Distribution(
                    Bins.from_dict(d["bins"]), tuple(float(s) for s in d["shares"]), d["count"]
                )
                for name, d in data["distributions"].items()
            },
            event_types=tuple(data["event_types"]),
            activity_period_s=float(data["activity_period_s"]),
        )

    def sizes(self, names: Iterable[str]) -> dict[str, int]:
        """Bins per distribution, for those of `names` the baseline has."""
        return {n: len(self.distributions[n].bins) for n in names if n in self.distributions}


def psi(baseline_shares: Sequence[float], live_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index: sum over bins of (live - base) * ln(live / base), shares
    floored at `EPSILON`. 0 when the live shares equal the baseline's; by a common rule of
    thumb below 0.1 is stable, 0.1 to 0.25 a moderate shift, above 0.25 a major one."""
    total = float(sum(live_counts))
    if total <= 0:
        raise ValueError("no live observations")
    value = 0.0
    for base, count in zip(baseline_shares, live_counts, strict=True):
        expected = max(base, EPSILON)
        actual = max(count / total, EPSILON)
        value += (actual - expected) * math.log(actual / expected)
    return value


class SlidingWindow:
    """Per-distribution bin counts over the last `buckets` time buckets of `bucket_s` seconds:
    a ring of buckets, so memory is `buckets` x the bins, whatever the traffic. A bucket is
    cleared when the ring comes round to it; an observation older than the ring is dropped."""

    def __init__(self, sizes: Mapping[str, int], bucket_s: float, buckets: int) -> None:
        self.sizes = dict(sizes)
        self.bucket_s = bucket_s
        self.buckets = buckets
        self._starts: list[int | None] = [None] * buckets
        self._counts: list[dict[str, list[float]]] = [{} for _ in range(buckets)]

    @property
    def window_s(self) -> float:
        return self.bucket_s * self.buckets

    def _bucket(self, now: float) -> dict[str, list[float]] | None:
        number = int(now // self.bucket_s)
        slot = number % self.buckets
        start = self._starts[slot]
        if start != number:
            if start is not None and start > number:
                return None  # older than the ring holds
            self._starts[slot] = number
            self._counts[slot] = {name: [0.0] * size for name, size in self.sizes.items()}
        return self._counts[slot]

    def add(self, name: str, index: int | None, now: float, count: float = 1.0) -> None:
        if index is None or name not in self.sizes:
            return
        bucket = self._bucket(now)
        if bucket is not None:
            bucket[name][index] += count

    def add_counts(self, name: str, counts: Sequence[float], now: float) -> None:
        if name not in self.sizes:
            return
        bucket = self._bucket(now)
        if bucket is not None:
            row = bucket[name]
            for i, count in enumerate(counts):
                row[i] += count

    def totals(self, now: float) -> dict[str, list[float]]:
        """Counts per bin over the buckets within the window ending at `now`."""
        newest = int(now // self.bucket_s)
        totals = {name: [0.0] * size for name, size in self.sizes.items()}
        for start, counts in zip(self._starts, self._counts, strict=True):
            if start is None or not newest - self.buckets < start <= newest:
                continue
            for name, row in counts.items():
                total = totals[name]
                for i, count in enumerate(row):
                    total[i] += count
        return totals


class ActivityCounter:
    """Events per user in each period of `period_s` (user activity). The counts of a period are
    handed over once a later time closes it (`observe` or `close`), never while it is partial.

    Memory is bounded: past `max_users` users in a period, only users whose id hashes into a
    halving share are kept (adaptive hash sampling, the same users in every process), so the
    counts are a sample of whole users' counts, not of their events."""

    def __init__(self, period_s: float, max_users: int = 100_000) -> None:
        self.period_s = period_s
        self.max_users = max_users
        self._period: int | None = None
        self._level = 0
        self._counts: dict[str, int] = {}

    def close(self, now: float) -> tuple[float, list[int]] | None:
        """(start of the period, events per user) if `now` is past the open period."""
        period = int(now // self.period_s)
        if self._period is None or period <= self._period:
            if self._period is None:
                self._period = period
            return None
        closed = (self._period * self.period_s, list(self._counts.values()))
        self._period, self._level, self._counts = period, 0, {}
        return closed if closed[1] else None

    def observe(self, user_id: str, now: float) -> tuple[float, list[int]] | None:
        closed = self.close(now)
        if self._level and zlib.crc32(user_id.encode()) & ((1 << self._level) - 1):
            return closed
        self._counts[user_id] = self._counts.get(user_id, 0) + 1
        if len(self._counts) > self.max_users:
            self._level += 1
            mask = (1 << self._level) - 1
            self._counts = {
                u: c for u, c in self._counts.items() if not zlib.crc32(u.encode()) & mask
            }
        return closed


@dataclass(frozen=True)
class Reference:
    """A version's live reference: the merged live counts of the `LIVE_REFERENCED`
    distributions (with the baseline's bins) over the window that ended at `captured_at`."""

    captured_at: float
    counts: dict[str, list[float]]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"format": FORMAT, "captured_at": self.captured_at, "counts": self.counts}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Reference:
        data = orjson.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"drift reference format {data.get('format')!r}, expected {FORMAT}")
        return cls(float(data["captured_at"]), data["counts"])

    @classmethod
    def capture(
        cls, live: Mapping[str, Sequence[float]], min_count: float, now: float
    ) -> Reference | None:
        """The reference of `live` (merged counts): each live-referenced distribution with at
        least `min_count` observations; None when none has."""
        counts = {
            name: [float(c) for c in live[name]]
            for name in sorted(LIVE_REFERENCED & live.keys())
            if sum(live[name]) >= max(min_count, 1)
        }
        return cls(now, counts) if counts else None


def reference_due(active_since: float, now: float, settle_s: float, window_s: float) -> bool:
    """Whether the window ending at `now` lies wholly after the settling time of a version
    active since `active_since`."""
    return now - window_s >= active_since + settle_s


@dataclass(frozen=True)
class LiveEntry:
    """One process's window as it writes it into `core.keys.DRIFT_LIVE`."""

    version: str
    written_at: float
    window_s: float
    counts: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": self.version,
                "written_at": self.written_at,
                "window_s": self.window_s,
                "counts": self.counts,
            },
            # Counts may be numpy scalars (a histogram's): written as the numbers they are.
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> LiveEntry:
        data = orjson.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"live drift format {data.get('format')!r}, expected {FORMAT}")
        return cls(data["version"], data["written_at"], data["window_s"], data["counts"])


def merge_live(
    entries: Iterable[LiveEntry], baseline: Baseline, version: str, now: float, max_age_s: float
) -> tuple[dict[str, list[float]], int]:
    """The summed counts of the entries of `version` written within `max_age_s` of `now` whose
    bins match the baseline's, and how many entries that is."""
    merged: dict[str, list[float]] = {}
    used = 0
    for entry in entries:
        if entry.version != version or now - entry.written_at > max_age_s:
            continue
        used += 1
        for name, counts in entry.counts.items():
            known = baseline.distributions.get(name)
            if known is None or len(known.bins) != len(counts):
                continue
            total = merged.setdefault(name, [0.0] * len(counts))
            for i, count in enumerate(counts):
                total[i] += count
    return merged, used


Against = Literal["training", "live_reference", "awaiting_reference"]


@dataclass(frozen=True)
class DriftOf:
    """One distribution's comparison. `psi` is None below `min_count` live observations, and
    for a live-referenced distribution until its reference is captured. `baseline` is what the
    live shares are compared with: the training baseline, or the live reference (`against`)."""

    name: str
    psi: float | None
    live_count: float
    baseline: Distribution
    live_shares: tuple[float, ...]
    against: Against = "training"


def report(
    baseline: Baseline,
    live: Mapping[str, Sequence[float]],
    min_count: float,
    reference: Reference | None = None,
) -> list[DriftOf]:
    """Every baseline distribution against its live counts (none yet: zero counts); those of
    `LIVE_REFERENCED` against `reference` instead."""
    found = []
    for name, distribution in sorted(baseline.distributions.items()):
        against: Against = "training"
        if name in LIVE_REFERENCED:
            referenced = reference.counts.get(name) if reference is not None else None
            if referenced is not None and len(referenced) == len(distribution.bins):
                against = "live_reference"
                distribution = Distribution.of_counts(distribution.bins, np.asarray(referenced))
            else:
                against = "awaiting_reference"
        counts = list(live.get(name) or [0.0] * len(distribution.bins))
        total = float(sum(counts))
        shares = tuple(c / total for c in counts) if total > 0 else (0.0,) * len(counts)
        comparable = total >= max(min_count, 1) and against != "awaiting_reference"
        value = psi(distribution.shares, counts) if comparable else None
        found.append(DriftOf(name, value, total, distribution, shares, against))
    return found
