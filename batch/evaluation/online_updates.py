"""The stream worker's user-vector updates replayed in process, for P3's tuning run.

This mirrors `streams.applier` event by event with the same update rules (`streams.
update_rules`): EMA from the unit batch user vector (or from the first item for a new user), or
ALS fold-in over the user's recent stream history pulled towards the batch vector. Ranking is
the API's with MMR off: item vectors dotted with the user vector, seen(u) excluded. A user with
no vector yet is ranked by online global popularity (the live API's fallback is trending, which
the tuning does not depend on: a weight only changes users who have a vector).

It exists so that the EMA weights and the fold-in prior are chosen on the tuning run in seconds;
the report run goes through the live stack (`recsys.replay`) and should lose nothing to it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from batch.evaluation.prequential import (
    OnlinePopularity,
    PrequentialScores,
    PrequentialSplit,
    rank_of,
    replay_events,
)
from batch.publish import ModelArtifacts
from core.rules import ema_update, fold_in_recent, gram_matrix, normalize
from schemas.events import EventType, stream_event_type

UpdateMode = Literal["ema", "fold-in"]

# Tuning grids: EMA weights as multiples of the configured defaults (ratios between event
# types kept), and the fold-in's pull towards the batch vector.
EMA_SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)
FOLD_IN_PRIORS = (0.0, 0.25, 1.0, 4.0, 16.0)


@dataclass(frozen=True)
class OnlineUpdateParams:
    mode: UpdateMode
    ema_weights: dict[EventType, float]
    fold_in_prior: float = 1.0
    fold_in_history: int = 50

    def settings_env(self) -> dict[str, str]:
        """The worker's environment for these parameters."""
        return {
            "RECSYS_STREAM_USER_UPDATE": self.mode,
            "RECSYS_STREAM_EMA_VIEW": repr(self.ema_weights["view"]),
            "RECSYS_STREAM_EMA_CLICK": repr(self.ema_weights["click"]),
            "RECSYS_STREAM_EMA_PURCHASE": repr(self.ema_weights["purchase"]),
            "RECSYS_STREAM_FOLD_IN_PRIOR": repr(self.fold_in_prior),
            "RECSYS_STREAM_FOLD_IN_HISTORY": str(self.fold_in_history),
        }

    def describe(self) -> dict[str, object]:
        if self.mode == "ema":
            return {"mode": "ema", "ema_weights": self.ema_weights}
        return {"mode": "fold-in", "prior": self.fold_in_prior, "history": self.fold_in_history}


class _Model:
    def __init__(self, artifacts: ModelArtifacts) -> None:
        self.item_ids = [str(i) for i in artifacts.item_ids]
        self.item_row = {item: n for n, item in enumerate(self.item_ids)}
        self.items = artifacts.item_vectors.astype(np.float32)
        self.users = {str(u): n for n, u in enumerate(artifacts.user_ids)}
        self.user_vectors = artifacts.user_vectors
        # The worker reads Y^T Y as published: float32 bytes, widened again.
        self.gram = gram_matrix(self.items).astype(np.float32).astype(np.float64)
        self.alpha = float(artifacts.params.get("alpha", 1.0))
        self.regularization = float(artifacts.params.get("regularization", 0.01))

    def batch_vector(self, user: str) -> np.ndarray | None:
        row = self.users.get(user)
        return None if row is None else self.user_vectors[row]


def simulate(
    split: PrequentialSplit, artifacts: ModelArtifacts, params: OnlineUpdateParams
) -> PrequentialScores:
    """Replay `split` with the stream's updates under `params`; the scores of every event."""
    model = _Model(artifacts)
    popularity = OnlinePopularity(model.item_ids, split.fit.interactions)
    vectors: dict[str, np.ndarray | None] = {}
    history: dict[str, deque[tuple[str, EventType]]] = defaultdict(
        lambda: deque(maxlen=params.fold_in_history)
    )
    scores = PrequentialScores()
    for event in replay_events(split):
        user = event.user_id
        if user not in vectors:
            batch = model.batch_vector(user)
            vectors[user] = (
                normalize(batch) if batch is not None and params.mode == "ema" else batch
            )
        if event.scored:
            scores.add(
                _rank(model, popularity, vectors[user], event.item_id, event.seen, event.ts),
                event.warm,
            )
        popularity.apply(event.item_id, event.ts)
        event_type = stream_event_type(event.event_type)
        history[user].append((event.item_id, event_type))
        row = model.item_row.get(event.item_id)
        if params.mode == "ema":
            if row is not None:
                vectors[user] = ema_update(
                    vectors[user], model.items[row], params.ema_weights[event_type]
                )
        else:
            vectors[user] = fold_in_recent(
                history[user],
                model.item_row,
                model.items,
                model.gram,
                model.alpha,
                model.regularization,
                prior=model.batch_vector(user),
                prior_weight=params.fold_in_prior,
            )
    return scores


def _rank(
    model: _Model,
    popularity: OnlinePopularity,
    vector: np.ndarray | None,
    target: str,
    seen: Iterable[str],
    ts: int,
) -> int:
    if vector is None:
        return popularity.rank(target, seen, ts)
    target_row = model.item_row.get(target)
    if target_row is None:
        return len(model.item_ids) + 1
    excluded = np.fromiter((model.item_row[i] for i in seen if i in model.item_row), np.int64)
    return rank_of(model.items @ vector, target_row, excluded)


@dataclass(frozen=True)
class TuningResult:
    chosen: OnlineUpdateParams
    grid: list[dict[str, object]]  # every candidate with its tuning-run HR@10


def tune(
    split: PrequentialSplit,
    artifacts: ModelArtifacts,
    mode: UpdateMode,
    default_weights: dict[EventType, float],
) -> TuningResult:
    """Pick the parameters of `mode` with the best HR@10 on P3's tuning run (ties: NDCG@10)."""
    if mode == "ema":
        candidates = [
            OnlineUpdateParams(
                "ema", {t: round(min(1.0, w * s), 4) for t, w in default_weights.items()}
            )
            for s in EMA_SCALES
        ]
    else:
        candidates = [
            OnlineUpdateParams("fold-in", dict(default_weights), fold_in_prior=prior)
            for prior in FOLD_IN_PRIORS
        ]
    grid = []
    for candidate in candidates:
        overall = simulate(split, artifacts, candidate).summary()["overall"]
        grid.append(
            {**candidate.describe(), "hr@10": overall["hr@10"], "ndcg@10": overall["ndcg@10"]}
        )
    best = max(range(len(grid)), key=lambda n: (grid[n]["hr@10"], grid[n]["ndcg@10"]))
    return TuningResult(chosen=candidates[best], grid=grid)
