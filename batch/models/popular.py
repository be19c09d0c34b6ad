"""Popularity baselines: the same ranking for every user."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from batch.models.base import Recommender, TrainData

SECONDS_PER_DAY = 86_400


class _PopularityRecommender(Recommender):
    """Scores every user with one item score vector."""

    _item_scores: np.ndarray

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._item_scores, (len(user_idx), len(self._item_scores)))


class MostPopular(_PopularityRecommender):
    """Items ranked by their summed interaction weight in the fit data."""

    name = "most-popular"

    def fit(self, data: TrainData) -> Self:
        self._item_scores = np.asarray(data.matrix.sum(axis=0), dtype=np.float32).ravel()
        return self


class RecentPopular(_PopularityRecommender):
    """Items ranked by their interaction weight in the window (now - window_days, now].

    `now` is `TrainData.now`, the latest fit timestamp. Items tied within the window (most of
    the catalog has no recent interaction) are ordered by all-time weight, so the tail of the
    list is still a sensible popularity ranking rather than index order.

    Parameters
    ----------
    window_days : float
        Length of the window, in days.
    """

    name = "recent-popular"

    def __init__(self, window_days: float = 7.0) -> None:
        self.window_days = window_days

    def fit(self, data: TrainData) -> Self:
        rows = data.interactions
        recent = rows[rows["ts"] > data.now - self.window_days * SECONDS_PER_DAY]
        recent_weight = np.bincount(
            recent["item_idx"].to_numpy(),
            weights=recent["weight"].to_numpy(dtype=np.float64),
            minlength=data.n_items,
        )
        all_time_weight = np.asarray(data.matrix.sum(axis=0), dtype=np.float64).ravel()
        # Lexicographic (recent, all-time) order; descending position as score keeps the scores
        # exact small integers in float32, and equal pairs tie (then lower index wins).
        order = np.lexsort((-all_time_weight, -recent_weight))
        keys = np.stack([recent_weight[order], all_time_weight[order]], axis=1)
        new_group = np.r_[True, (np.diff(keys, axis=0) != 0).any(axis=1)]
        group_rank = np.cumsum(new_group)
        scores = np.empty(data.n_items, dtype=np.float32)
        scores[order] = (group_rank[-1] - group_rank + 1).astype(np.float32)
        self._item_scores = scores
        return self

    def params(self) -> dict[str, Any]:
        return {"window_days": self.window_days}
