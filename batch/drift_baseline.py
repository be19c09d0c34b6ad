"""The drift baseline of a model version, computed from its training data when it is trained.

Called by `batch.train.to_artifacts` (every trained version: `recsys train`, `recsys retrain`,
the replay) and, for a version with a learned ranker, by `batch.ranking.train.with_ranker`
(`with_ranker_features`); `batch.publish` stores the result with the version
(`core.keys.drift_baseline`). What each distribution is, and how the worker and the API observe
the same thing live, is in `core.drift` and docs/operations.md ("Drift").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from core import drift
from core.archive import TRAINING_EVENT_TYPES
from core.ranking import FEATURES

# Numeric distributions get this many quantile bins (fewer where values tie).
NUMERIC_BINS = 10
# User activity counts each user's events per period of this length (5 minutes: one bucket of
# the live window by default); the live side reads the period from the baseline.
ACTIVITY_PERIOD_S = 300.0
# Served scores: the top SCORED_K dot products of up to SCORED_USERS training users (a seeded
# sample) against every item, their training items left out as answers leave seen items out.
SCORED_USERS = 500
SCORED_K = 10
# Ranker features: at most this many of its training rows (an even stride through them).
FEATURE_ROWS = 200_000


def training_baseline(
    interactions: pd.DataFrame,
    popularity: np.ndarray,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    seen: object | None = None,
    item_genres: Sequence[Sequence[str]] = (),
) -> drift.Baseline:
    """The baseline of a version fit on `interactions` (with `user_idx`, `item_idx`, `ts`,
    `event_type`): event-type mix, item popularity, user activity and served scores.
    `popularity` is the training events per item; `seen` the (users x items) interaction
    matrix, whose entries are left out of the scored lists; `item_genres` each item's genres
    (by item index), for the genre mix of the events."""
    distributions: dict[str, drift.Distribution] = {}
    types = interactions["event_type"].astype(str)
    present = [t for t in TRAINING_EVENT_TYPES if (types == t).any()]
    if present:  # a dataset of ratings has none of the live types: no event-type baseline
        distributions[drift.EVENT_TYPES] = drift.Distribution.of_values(
            drift.Bins.categorical(TRAINING_EVENT_TYPES), types.to_numpy()
        )
    item_idx = interactions["item_idx"].to_numpy()
    if len(item_idx):
        per_event = np.asarray(popularity, dtype=np.float64)[item_idx]
        distributions[drift.ITEM_POPULARITY] = _numeric(per_event)
        if any(item_genres):
            names = sorted({g for genres in item_genres for g in genres})
            acted = [g for i in item_idx for g in item_genres[i]]
            distributions[drift.ITEM_GENRES] = drift.Distribution.of_values(
                drift.Bins.categorical(names), np.asarray(acted, dtype=object)
            )
        period = (interactions["ts"].to_numpy(dtype=np.int64) // int(ACTIVITY_PERIOD_S)).astype(
            np.int64
        )
        keyed = pd.DataFrame({"u": interactions["user_idx"].to_numpy(), "p": period})
        distributions[drift.USER_ACTIVITY] = _numeric(keyed.groupby(["u", "p"]).size().to_numpy())
    scores = served_scores(user_vectors, item_vectors, seen, interactions)
    if len(scores):
        distributions[drift.SERVED_SCORES] = _numeric(scores)
    foreseen = event_scores(user_vectors, item_vectors, interactions)
    if len(foreseen):
        distributions[drift.EVENT_SCORES] = _numeric(foreseen)
    return drift.Baseline(distributions, tuple(present or TRAINING_EVENT_TYPES), ACTIVITY_PERIOD_S)


def served_scores(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    seen: object | None = None,
    interactions: pd.DataFrame | None = None,
) -> np.ndarray:
    """Top-`SCORED_K` dot products of a seeded sample of users against every item: the scores a
    personalized answer shows (the vector index scores by dot product). A user the stream knows
    is served by their online vector, so each sampled user's vector is the one the worker would
    hold after their training events (`interactions`, by `user_idx`, in time order): the EMA of
    `core.rules.ema_steps` from the unit-length batch vector, with the default weights.
    Without `interactions`, the unit-length batch vector."""
    n_users, n_items = len(user_vectors), len(item_vectors)
    if not n_users or not n_items:
        return np.empty(0)
    users = _sampled_users(n_users)
    online, _ = _replayed(users, user_vectors, item_vectors, interactions)
    k = min(SCORED_K, n_items)
    found = []
    for start in range(0, len(users), 100):
        chunk = users[start : start + 100]
        scores = online[start : start + 100] @ item_vectors.T.astype(np.float32)
        if seen is not None:
            rows = seen[chunk]  # type: ignore[index]
            scores[rows.nonzero()] = -np.inf
        top = np.partition(scores, n_items - k, axis=1)[:, n_items - k :]
        found.append(top[np.isfinite(top)])
    return np.concatenate(found).astype(np.float64)


def event_scores(
    user_vectors: np.ndarray, item_vectors: np.ndarray, interactions: pd.DataFrame
) -> np.ndarray:
    """The cosine of each training event's item of the sampled users (those of `served_scores`)
    against the vector the worker would have held just before it, replaying their events in
    time order from the unit-length batch vector (`core.rules.ema_steps`). In-sample, so only
    the bins are kept for comparison; the live side is compared with a live reference
    (`core.drift.LIVE_REFERENCED`)."""
    if not len(user_vectors) or not len(item_vectors) or not len(interactions):
        return np.empty(0)
    users = _sampled_users(len(user_vectors))
    _, scores = _replayed(users, user_vectors, item_vectors, interactions)
    return np.asarray(scores, dtype=np.float64)


def _sampled_users(n_users: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n_users, size=min(SCORED_USERS, n_users), replace=False))


def _replayed(
    users: np.ndarray,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    interactions: pd.DataFrame | None,
) -> tuple[np.ndarray, list[float]]:
    """The sampled users' vectors as the stream worker would hold them after their events (see
    `served_scores`), and the score of each event against the vector held before it."""
    from core.rules import ema_steps
    from core.settings import Settings
    from schemas.events import stream_event_type

    starts: np.ndarray = user_vectors[users].astype(np.float32)
    starts /= np.maximum(np.linalg.norm(starts, axis=1, keepdims=True), 1e-12)
    if interactions is None or not len(interactions):
        return starts, []
    settings = Settings()
    weights = {
        "view": settings.stream_ema_view,
        "click": settings.stream_ema_click,
        "purchase": settings.stream_ema_purchase,
    }
    sampled = interactions[interactions["user_idx"].isin(users)].sort_values("ts", kind="stable")
    steps: dict[int, list[tuple[np.ndarray, float]]] = {int(u): [] for u in users}
    for user, item, kind in zip(
        sampled["user_idx"], sampled["item_idx"], sampled["event_type"], strict=True
    ):
        weight = weights.get(stream_event_type(str(kind)))
        if weight is not None:
            steps[int(user)].append((item_vectors[item], weight))
    scores: list[list[float]] = [[] for _ in users]
    moved = ema_steps(list(starts), [steps[int(u)] for u in users], scores)
    vectors = np.stack([m if m is not None else s for m, s in zip(moved, starts, strict=True)])
    return vectors, [score for user in scores for score in user]


def with_ranker_features(baseline: drift.Baseline, features: np.ndarray) -> drift.Baseline:
    """`baseline` plus one distribution per ranker feature (`core.ranking.FEATURES`) over the
    ranker's training rows (its candidates' features as of each replayed event)."""
    if not len(features):
        return baseline
    rows = features[:: max(1, len(features) // FEATURE_ROWS)]
    added = {
        drift.RANKER_FEATURE_PREFIX + name: _numeric(rows[:, column])
        for column, name in enumerate(FEATURES)
    }
    return replace(baseline, distributions={**baseline.distributions, **added})


def _numeric(values: np.ndarray) -> drift.Distribution:
    bins = drift.Bins.quantiles(values, NUMERIC_BINS)
    return drift.Distribution.of_values(bins, values)
