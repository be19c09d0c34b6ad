"""Two-stage recommendation: candidates from several sources, re-ranked by a learned model.

Stage one gathers, for each user, the unseen items of three sources as of "now" (the newest fit
row): the ALS neighbours of the user's vector (`ann`), the items other users went on to from the
user's latest items (`transition`: consecutive steps, recency-decayed, as the stream worker's
transition table counts them), and the recently popular (`recent`: recency-decayed counts).
Stage two scores each (user, candidate) from its features (each
source's score and rank, the item's popularity, the user's activity and idle time, the
candidate's similarity to the user's last item; `FEATURES` here) with a LightGBM LambdaRank model.

Time-safe training: the ranker learns at an inner cut of the fit rows (the last
`label_fraction` of them): sources and features from the rows before that cut only, labels from
the items each user took up after it. Then the sources are rebuilt on all fit rows and the
ranker scores them. `tests/unit/test_two_stage.py` proves that no feature reads a row after its
cut. Items that are no user's candidate rank after every candidate, in ALS order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.models.als import ALSRecommender
from batch.models.base import Recommender, TrainData
from batch.models.registry import SERVED_ALS_PARAMS

SECONDS_PER_DAY = 86_400
# This offline model's features (P1: one cut, no stream): the served ranker's are
# `core.ranking.FEATURES`, read from the live state.
FEATURES: tuple[str, ...] = (
    "ann_score",
    "ann_rank",
    "transition_score",
    "transition_rank",
    "recent_score",
    "recent_rank",
    "item_popularity",
    "user_events",
    "user_idle_s",
    "last_item_similarity",
)
# A candidate's score in `score` lies above this; every other item's below it.
_CANDIDATE_FLOOR = 1e4


@dataclass(frozen=True)
class _Candidates:
    """Every user's candidates as rows: user index, item index, feature values."""

    user_idx: np.ndarray
    item_idx: np.ndarray
    features: np.ndarray  # (rows x len(FEATURES)) float32


def rows_before(data: TrainData, cut_ts: float) -> TrainData:
    """`data` as it was before `cut_ts`: the same user and item indices, only earlier rows."""
    rows = data.interactions[data.interactions["ts"] < cut_ts]
    matrix = sp.csr_matrix(
        (
            rows["weight"].to_numpy(dtype=np.float32),
            (rows["user_idx"].to_numpy(), rows["item_idx"].to_numpy()),
        ),
        shape=data.matrix.shape,
    )
    matrix.sum_duplicates()
    now = int(rows["ts"].max()) if len(rows) else data.now
    return replace(data, matrix=matrix, interactions=rows.reset_index(drop=True), now=now)


def _decay(ts: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    return np.power(2.0, (ts.astype(np.float64) - now) / (half_life_days * SECONDS_PER_DAY))


def _top(scores: np.ndarray, seen: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best unseen items of one score row (positive scores only): indices and scores."""
    scores = np.where(seen, -np.inf, scores)
    n = min(n, scores.size)
    best = np.argpartition(-scores, n - 1)[:n]
    best = best[np.argsort(-scores[best], kind="stable")]
    best = best[np.isfinite(scores[best]) & (scores[best] > 0)]
    return best, scores[best]


class TwoStageRecommender(Recommender):
    """Candidates from ALS, item transitions and recent popularity, ranked by LambdaRank.

    Parameters
    ----------
    candidates : int
        Candidates per source and user.
    label_fraction : float
        The newest share of the fit rows whose items are the ranker's labels.
    half_life_days : float
        Recency decay of the transition counts and of recent popularity.
    recent_items : int
        The user's latest items whose transitions are followed.
    n_estimators, learning_rate, num_leaves : LightGBM's.
    seed : int
    """

    name = "two-stage"

    def __init__(
        self,
        candidates: int = 100,
        label_fraction: float = 0.1,
        half_life_days: float = 7.0,
        recent_items: int = 3,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        seed: int = 0,
    ) -> None:
        self.candidates = candidates
        self.label_fraction = label_fraction
        self.half_life_days = half_life_days
        self.recent_items = recent_items
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.seed = seed

    def params(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "label_fraction": self.label_fraction,
            "half_life_days": self.half_life_days,
            "recent_items": self.recent_items,
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "seed": self.seed,
        }

    # --- fit ----------------------------------------------------------------------------

    def fit(self, data: TrainData) -> Self:
        import lightgbm

        rows = data.interactions
        cut_ts = float(np.quantile(rows["ts"].to_numpy(), 1.0 - self.label_fraction))
        before = rows_before(data, cut_ts)
        inner = self.candidates_of(before)
        labels = self._labels(before, rows[rows["ts"] >= cut_ts], inner)
        keep = _users_with_a_positive(inner.user_idx, labels)
        users = inner.user_idx[keep]
        training = lightgbm.Dataset(
            inner.features[keep],
            label=labels[keep],
            group=np.unique(users, return_counts=True)[1],  # rows come grouped by user, sorted
            feature_name=list(FEATURES),
        )
        self.ranker = lightgbm.train(
            {
                "objective": "lambdarank",
                "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves,
                "seed": self.seed,
                "num_threads": 1,
                "deterministic": True,
                "verbose": -1,
            },
            training,
            num_boost_round=self.n_estimators,
        )
        final = self.candidates_of(data)
        self._als_scores: np.ndarray = self._als.user_vectors() @ self._als.item_vectors().T
        ranked = self.ranker.predict(final.features)
        self._final = (final.user_idx, final.item_idx, np.asarray(ranked, dtype=np.float64))
        return self

    @staticmethod
    def _labels(before: TrainData, after: pd.DataFrame, found: _Candidates) -> np.ndarray:
        """1 where the candidate is an item its user took up after the cut (and had not
        before), else 0."""
        seen_before = before.matrix
        taken = set(zip(after["user_idx"].to_numpy(), after["item_idx"].to_numpy(), strict=True))
        labels = np.fromiter(
            (
                (u, i) in taken and seen_before[u, i] == 0
                for u, i in zip(found.user_idx, found.item_idx, strict=True)
            ),
            dtype=np.int32,
            count=len(found.user_idx),
        )
        return labels

    # --- stage one and the features -------------------------------------------------------

    def candidates_of(self, data: TrainData) -> _Candidates:
        """Every user's candidates and their features, from `data` alone (nothing after its
        `now`): what the ranker learns from at the inner cut and scores at the end."""
        self._als = ALSRecommender(**(SERVED_ALS_PARAMS | {"random_state": self.seed})).fit(data)
        user_vectors, item_vectors = self._als.user_vectors(), self._als.item_vectors()
        unit_items = item_vectors / np.maximum(
            np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12
        )
        rows = data.interactions
        weights = rows["weight"].to_numpy(dtype=np.float64)
        decayed = weights * _decay(rows["ts"].to_numpy(), data.now, self.half_life_days)
        recent = np.bincount(rows["item_idx"], weights=decayed, minlength=data.n_items)
        popularity = np.log1p(np.asarray(data.matrix.sum(axis=0)).ravel())
        transitions = self._transitions(rows, data.n_items, data.now)
        by_user = rows.groupby("user_idx", sort=True)
        last_ts = by_user["ts"].max()
        n_events = by_user.size()
        latest = by_user["item_idx"].apply(
            lambda items: items.to_numpy()[::-1][: self.recent_items]
        )
        seen = data.matrix.tocsr()
        out_users, out_items, out_features = [], [], []
        for user, latest_items in latest.items():
            user = int(user)
            user_seen = np.zeros(data.n_items, dtype=bool)
            user_seen[seen.indices[seen.indptr[user] : seen.indptr[user + 1]]] = True
            ann_scores = user_vectors[user] @ item_vectors.T
            followed = np.zeros(data.n_items)
            for weight, item in zip((1.0, 0.5, 0.25, 0.125), latest_items, strict=False):
                row = transitions.getrow(int(item))
                followed[row.indices] += weight * row.data
            sources = [
                _top(ann_scores, user_seen, self.candidates),
                _top(followed, user_seen, self.candidates),
                _top(recent, user_seen, self.candidates),
            ]
            items = np.unique(np.concatenate([found for found, _ in sources]))
            if items.size == 0:
                continue
            features = np.zeros((items.size, len(FEATURES)), dtype=np.float32)
            for column, (found, scores) in enumerate(sources):
                position = {int(item): rank for rank, item in enumerate(found)}
                lookup = dict(zip(found.tolist(), scores.tolist(), strict=True))
                features[:, 2 * column] = [lookup.get(int(i), 0.0) for i in items]
                features[:, 2 * column + 1] = [
                    position.get(int(i), self.candidates) + 1 for i in items
                ]
            features[:, 6] = popularity[items]
            features[:, 7] = np.log1p(n_events[user])
            features[:, 8] = np.log1p(data.now - last_ts[user])
            features[:, 9] = unit_items[items] @ unit_items[int(latest_items[0])]
            out_users.append(np.full(items.size, user, dtype=np.int64))
            out_items.append(items)
            out_features.append(features)
        if not out_users:
            empty = np.empty(0, dtype=np.int64)
            return _Candidates(empty, empty, np.empty((0, len(FEATURES)), dtype=np.float32))
        return _Candidates(
            np.concatenate(out_users), np.concatenate(out_items), np.concatenate(out_features)
        )

    def _transitions(self, rows: pd.DataFrame, n_items: int, now: float) -> sp.csr_matrix:
        """Decayed counts of users' steps from one item to the next (source x target)."""
        ordered = rows.sort_values(["user_idx", "ts"], kind="stable")
        users = ordered["user_idx"].to_numpy()
        items = ordered["item_idx"].to_numpy()
        step = (users[1:] == users[:-1]) & (items[1:] != items[:-1])
        weights = ordered["weight"].to_numpy(dtype=np.float64)[1:][step]
        weights = weights * _decay(ordered["ts"].to_numpy()[1:][step], now, self.half_life_days)
        counts = sp.csr_matrix(
            (weights, (items[:-1][step], items[1:][step])), shape=(n_items, n_items)
        )
        counts.sum_duplicates()
        return counts

    # --- score ---------------------------------------------------------------------------

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        users, items, ranked = self._final
        scores: np.ndarray = self._als_scores[user_idx].astype(np.float64) - _CANDIDATE_FLOOR
        row_of_user = np.full(self._als_scores.shape[0], -1, dtype=np.int64)
        row_of_user[user_idx] = np.arange(len(user_idx))
        rows = row_of_user[users]
        asked = rows >= 0
        scores[rows[asked], items[asked]] = _CANDIDATE_FLOOR + ranked[asked]
        return scores.astype(np.float32)


def _users_with_a_positive(user_idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rows of the users that have at least one positive candidate (LambdaRank learns nothing
    from a group without one)."""
    positive_users = np.unique(user_idx[labels > 0])
    keep: np.ndarray = np.isin(user_idx, positive_users)
    return keep
