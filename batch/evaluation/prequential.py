"""Protocol P3 (prequential replay) of ../shared/protocols.md: the split, the per-event scoring,
and the online popularity baselines.

The live replay (`recsys.replay`) drives the real stack with these pieces; `batch.evaluation.
online_updates` replays the stream's update rules in process for the tuning run. Both score the
same way: for each replayed event (u, i, t) whose item u has not seen, rank every catalog item
except seen(u), record hit@10, NDCG@10 = 1/log2(rank + 1) within the top 10, and 1/rank; then
add i to seen(u).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from batch.data import Dataset

K = 10
SEVEN_DAYS_S = 7 * 86_400


class ReplayRun(StrEnum):
    """`tuning`: fit on the first 80% of rows, replay [80%, 90%). `report`: fit on the first
    90%, replay the last 10%."""

    TUNING = "tuning"
    REPORT = "report"


_CUTS = {ReplayRun.TUNING: (8, 9), ReplayRun.REPORT: (9, 10)}


@dataclass(frozen=True)
class PrequentialSplit:
    run: ReplayRun
    fit: Dataset  # the dataset restricted to the fit rows (metadata kept whole)
    replay: pd.DataFrame  # the replayed rows, chronological

    def warm_users(self) -> set[str]:
        return set(self.fit.interactions["user_id"])

    def seen_at_start(self) -> dict[str, set[str]]:
        """seen(u) before the replay: each user's fit items."""
        rows = self.fit.interactions
        return {
            str(user): set(items) for user, items in rows.groupby("user_id", sort=False)["item_id"]
        }


def p3_split(dataset: Dataset, run: ReplayRun, limit: int | None = None) -> PrequentialSplit:
    """Cut `dataset` in time order for one P3 run; `limit` replays only the first `limit` rows
    of the replay period (short runs for tests and smoke checks)."""
    rows = dataset.chronological()
    fit_tenths, end_tenths = _CUTS[run]
    fit_end = len(rows) * fit_tenths // 10
    replay_end = len(rows) * end_tenths // 10
    replay = rows.iloc[fit_end:replay_end]
    if limit is not None:
        replay = replay.iloc[:limit]
    fit = replace(dataset, interactions=rows.iloc[:fit_end].reset_index(drop=True))
    return PrequentialSplit(run=run, fit=fit, replay=replay.reset_index(drop=True))


@dataclass(frozen=True)
class ReplayEvent:
    position: int
    user_id: str
    item_id: str
    ts: int
    event_type: str
    scored: bool  # False: the user had seen the item already (not scored, still applied)
    warm: bool
    # seen(u) before this event; the generator adds the item when it is resumed, so read it
    # before asking for the next event.
    seen: set[str]


def replay_events(split: PrequentialSplit) -> Iterator[ReplayEvent]:
    """The replayed rows in order, each marked scored or not; seen(u) is tracked here, so a
    caller only ranks and applies."""
    seen = split.seen_at_start()
    warm = split.warm_users()
    columns = split.replay[["user_id", "item_id", "ts", "event_type"]].itertuples(index=False)
    for position, (user, item, ts, event_type) in enumerate(columns):
        user, item = str(user), str(item)
        user_seen = seen.setdefault(user, set())
        scored = item not in user_seen
        yield ReplayEvent(
            position, user, item, int(ts), str(event_type), scored, user in warm, user_seen
        )
        user_seen.add(item)


def rank_of(scores: np.ndarray, target: int, excluded: np.ndarray) -> int:
    """1-based rank of item `target` among all items but `excluded` (indices), by descending
    score; ties go to the lower index, as a stable sort would order them."""
    mask = np.ones(len(scores), dtype=bool)
    mask[excluded] = False
    mask[target] = True
    score = scores[target]
    ahead = (scores > score) | ((scores == score) & (np.arange(len(scores)) < target))
    return int(np.count_nonzero(ahead & mask)) + 1


def rank_in_list(ranked: Sequence[str], target: str) -> int | None:
    """1-based rank of `target` in a returned list, None when it is not there."""
    try:
        return ranked.index(target) + 1
    except ValueError:
        return None


@dataclass
class PrequentialScores:
    """Per-event metrics of one configuration, summarised overall and for warm / cold users.

    A rank of None means the target was not among the items the system returned; it counts
    as a miss and a reciprocal rank of 0 (the live API returns at most 100 items, so its MRR
    is truncated there, which costs at most 0.01 per event).
    """

    hits: list[float] = field(default_factory=list)
    ndcgs: list[float] = field(default_factory=list)
    rrs: list[float] = field(default_factory=list)
    warm: list[bool] = field(default_factory=list)

    def add(self, rank: int | None, warm: bool) -> None:
        in_top = rank is not None and rank <= K
        self.hits.append(1.0 if in_top else 0.0)
        self.ndcgs.append(1.0 / math.log2(rank + 1) if in_top and rank is not None else 0.0)
        self.rrs.append(1.0 / rank if rank is not None else 0.0)
        self.warm.append(warm)

    def _summary(self, keep: np.ndarray) -> dict[str, Any]:
        n = int(keep.sum())

        def mean(values: list[float]) -> float:
            return round(float(np.asarray(values)[keep].mean()), 4) if n else 0.0

        def interval(values: list[float]) -> list[float]:
            """Normal 95% interval of the mean (n is in the thousands)."""
            if n < 2:
                return [0.0, 0.0]
            kept = np.asarray(values)[keep]
            half = 1.96 * float(kept.std(ddof=1)) / math.sqrt(n)
            return [round(float(kept.mean()) - half, 4), round(float(kept.mean()) + half, 4)]

        return {
            "hr@10": mean(self.hits),
            "hr@10_ci95": interval(self.hits),
            "ndcg@10": mean(self.ndcgs),
            "ndcg@10_ci95": interval(self.ndcgs),
            "mrr": mean(self.rrs),
            "scored_events": n,
        }

    def summary(self) -> dict[str, dict[str, Any]]:
        warm = np.asarray(self.warm, dtype=bool)
        everyone = np.ones(len(warm), dtype=bool)
        return {
            "overall": self._summary(everyone),
            "warm": self._summary(warm),
            "cold": self._summary(~warm),
        }

    def hr_over_time(self, slices: int = 20) -> list[float]:
        """HR@10 over consecutive equal slices of the scored events (the plot's line)."""
        if not self.hits:
            return []
        return [
            round(float(part.mean()), 4)
            for part in np.array_split(np.asarray(self.hits), min(slices, len(self.hits)))
        ]


class OnlinePopularity:
    """A popularity baseline updated online: interaction counts over all time, or over a
    sliding window of event time (the last `window_s` seconds before the event scored)."""

    def __init__(
        self, catalog: Sequence[str], fit_rows: pd.DataFrame, window_s: int | None = None
    ) -> None:
        self.index = {item: n for n, item in enumerate(catalog)}
        self.counts = np.zeros(len(catalog), dtype=np.float64)
        self.window_s = window_s
        self._recent: deque[tuple[int, int]] = deque()
        rows = fit_rows.sort_values("ts", kind="stable")
        for item, ts in zip(rows["item_id"].astype(str), rows["ts"].astype(int), strict=True):
            self.apply(item, ts)

    def rank(self, target: str, seen: Iterable[str], now_ts: int) -> int:
        if target not in self.index:
            return len(self.index) + 1
        self._expire(now_ts)
        excluded = np.fromiter((self.index[i] for i in seen if i in self.index), dtype=np.int64)
        return rank_of(self.counts, self.index[target], excluded)

    def apply(self, item: str, ts: int) -> None:
        position = self.index.get(item)
        if position is None:
            return
        self.counts[position] += 1
        if self.window_s is not None:
            self._recent.append((ts, position))
            self._expire(ts)

    def _expire(self, now_ts: int) -> None:
        if self.window_s is None:
            return
        while self._recent and self._recent[0][0] <= now_ts - self.window_s:
            _, position = self._recent.popleft()
            self.counts[position] -= 1


def popularity_baselines(
    split: PrequentialSplit, catalog: Sequence[str]
) -> dict[str, PrequentialScores]:
    """Score the two online popularity baselines over the replay (no services needed)."""
    baselines = {
        "popularity-global": OnlinePopularity(catalog, split.fit.interactions),
        "popularity-7d": OnlinePopularity(catalog, split.fit.interactions, SEVEN_DAYS_S),
    }
    scores = {name: PrequentialScores() for name in baselines}
    for event in replay_events(split):
        for name, baseline in baselines.items():
            if event.scored:
                scores[name].add(baseline.rank(event.item_id, event.seen, event.ts), event.warm)
            baseline.apply(event.item_id, event.ts)
    return scores
