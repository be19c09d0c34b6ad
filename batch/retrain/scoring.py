"""Scoring a candidate, the active version and popularity on one held-out slice.

The slice is a `batch.evaluation.protocols.cut_split`: P1's rules at the retraining cut. Every
scorer ranks the same catalog (the window's items) for the same evaluated users, with each
user's items before the cut excluded, and reports NDCG@10 and HR@10 as P1 does
(`batch.evaluation.metrics`). An item a model has no vector for ranks after every item it has
one for (it cannot recommend it).

The active version is scored from what it serves (`active_vectors`): its published item vectors
and, for each evaluated user, its batch user vector; a user it has none for (new since it was
trained) gets what the stream worker's fold-in would give them, the ALS fold-in of their events
before the cut over its item vectors; a user none of whose items it knows gets its popularity
ranking, as the API's popular fallback would answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from batch.data import IdIndex
from batch.evaluation.metrics import per_user_metrics, rank_users
from batch.evaluation.protocols import EvaluationSplit
from core.rules import fold_in_recent, gram_matrix

K = 10
# The score of an item the scored model has no vector for: below any real score, above the
# excluded items' -inf.
_UNKNOWN = -1e30


@dataclass(frozen=True)
class Scores:
    ndcg: float  # NDCG@10, mean over evaluated users
    hr: float  # HR@10
    users: int  # evaluated users

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Embeddings:
    """A model as dot products: user and item vectors by id."""

    user_ids: np.ndarray
    user_vectors: np.ndarray  # (users x dim)
    item_ids: np.ndarray
    item_vectors: np.ndarray  # (items x dim)


def score(split: EvaluationSplit, model: Embeddings) -> Scores:
    """NDCG@10 and HR@10 of `model` on `split`'s evaluated users over its catalog. Every
    evaluated user must have a vector in `model`."""
    users = IdIndex(split.evaluated_users)
    catalog = IdIndex(split.catalog)
    encoded = split.encode_over(users, catalog)
    user_rows = IdIndex(model.user_ids).encode(users.ids)
    if (user_rows < 0).any():
        raise ValueError("an evaluated user has no vector in the scored model")
    user_matrix = np.asarray(model.user_vectors, dtype=np.float32)[user_rows]
    item_rows = IdIndex(model.item_ids).encode(catalog.ids)
    known = item_rows >= 0
    item_matrix = np.zeros((len(catalog), model.item_vectors.shape[1]), dtype=np.float32)
    item_matrix[known] = model.item_vectors[item_rows[known]]

    def scores(user_idx: np.ndarray) -> np.ndarray:
        found: np.ndarray = (user_matrix[user_idx] @ item_matrix.T).astype(np.float64)
        found[:, ~known] = _UNKNOWN
        return found

    outcome = rank_users(scores, encoded, max_k=K)
    metrics = per_user_metrics(outcome, K)
    return Scores(float(metrics["ndcg"].mean()), float(metrics["hr"].mean()), len(users))


def popularity(split: EvaluationSplit) -> Embeddings:
    """The most-popular baseline as embeddings: every user ranks items by their count in the
    fit rows."""
    counts = split.fit_rows["item_id"].value_counts()
    catalog = np.asarray(split.catalog, dtype=object)
    values = counts.reindex(pd.Index(catalog)).fillna(0).to_numpy(dtype=np.float32)
    users = split.evaluated_users
    return Embeddings(users, np.ones((len(users), 1), np.float32), catalog, values[:, None])


def active_vectors(
    split: EvaluationSplit,
    item_ids: list[str],
    item_vectors: np.ndarray,
    item_popularity: Mapping[str, float],
    batch_vectors: Mapping[str, np.ndarray],
    params: Mapping[str, object],
    fold_in_history: int,
) -> Embeddings:
    """The active version as served to the evaluated users (see the module's docstring).

    A popularity column is appended to the item vectors: users with a vector weigh it 0, users
    answered by popularity weigh only it.
    """
    vectors = np.asarray(item_vectors, dtype=np.float32)
    dim = vectors.shape[1]
    row_of_item = {item: row for row, item in enumerate(item_ids)}
    gram = gram_matrix(vectors)
    alpha = float(params.get("alpha", 1.0))  # type: ignore[arg-type]
    regularization = float(params.get("regularization", 0.01))  # type: ignore[arg-type]
    history = split.fit_rows.groupby("user_id", sort=False)
    users = split.evaluated_users
    user_matrix = np.zeros((len(users), dim + 1), dtype=np.float32)
    for row, user in enumerate(users):
        vector = batch_vectors.get(user)
        if vector is None:
            recent = history.get_group(user).tail(fold_in_history)
            pairs = zip(recent["item_id"], recent["event_type"], strict=True)
            vector = fold_in_recent(pairs, row_of_item, vectors, gram, alpha, regularization,
                                    prior=None, prior_weight=0.0)  # fmt: skip
        if vector is None:
            user_matrix[row, dim] = 1.0
        else:
            user_matrix[row, :dim] = vector
    counts = np.array([float(item_popularity.get(item, 0.0)) for item in item_ids], np.float32)
    extended = np.hstack([vectors, counts[:, None]])
    return Embeddings(users, user_matrix, np.asarray(item_ids, dtype=object), extended)
