"""The interface every model shares: fit on `TrainData`, score users over the whole catalog.

Evaluation ranks every catalog item by `score`; embedding models (ALS, two-tower) also expose
the user and item vectors that serving uses, and their `score` must equal
`user_vectors()[users] @ item_vectors().T` so that offline figures describe what is served.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.data import IdIndex

# Called as fitting advances with (steps done, total steps), e.g. to drive a progress bar.
FitProgress = Callable[[int, int], None]


@dataclass
class TrainData:
    """What a model is fitted on. Indices are dense; `users`/`items` map them to string ids.

    matrix: csr (n_users x n_items) of summed interaction weights (duplicates summed).
    interactions: the fit rows with extra int columns `user_idx` and `item_idx`, in
        chronological order (ts, then file order); for time- and sequence-aware models.
    items: item metadata (batch.data.ITEM_COLUMNS) with an `item_idx` column, one row per
        catalog item; catalog items absent from the fit rows are still present here.
    users: user metadata with a `user_idx` column, or None.
    now: the latest timestamp of the fit rows (epoch seconds): "the present" for the model.
    """

    users: IdIndex
    items: IdIndex
    matrix: sp.csr_matrix
    interactions: pd.DataFrame
    item_features: pd.DataFrame
    user_features: pd.DataFrame | None
    now: int

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


class Recommender(ABC):
    """A model: `fit` then `score`. Hyperparameters are constructor arguments."""

    name: str = "model"

    @abstractmethod
    def fit(self, data: TrainData) -> Self:
        """Learn from `data`; returns self."""

    @abstractmethod
    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores (len(user_idx) x n_items, float32) for known users; higher is better."""

    def params(self) -> dict[str, Any]:
        """Hyperparameters, for reports."""
        return {}


class EmbeddingRecommender(Recommender):
    """A model whose scores are dot products of user and item vectors."""

    @abstractmethod
    def fit(self, data: TrainData, progress: FitProgress | None = None) -> Self:
        """Learn from `data`, reporting iterations or epochs to `progress`; returns self."""

    @abstractmethod
    def user_vectors(self) -> np.ndarray:
        """(n_users x dim) float32."""

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """(n_items x dim) float32."""

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self.user_vectors()[user_idx] @ self.item_vectors().T
        return scores.astype(np.float32, copy=False)

    def save(self, path: Path) -> None:
        """Plain arrays (.npz), no pickle."""
        np.savez(path, user_vectors=self.user_vectors(), item_vectors=self.item_vectors())


def build_train_data(
    fit_rows: pd.DataFrame,
    catalog: pd.Series | np.ndarray,
    item_metadata: pd.DataFrame,
    user_metadata: pd.DataFrame | None = None,
    users: pd.Series | np.ndarray | None = None,
) -> TrainData:
    """Index users and items and build the interaction matrix.

    fit_rows: interaction rows (batch.data.INTERACTION_COLUMNS) to learn from.
    catalog: every item id the model must be able to rank (evaluation: every distinct item of
        the interaction file; publishing: every item with metadata).
    users: user ids to index (default: the users of `fit_rows`, in order of appearance).
    """
    ordered = fit_rows.sort_values("ts", kind="stable")
    user_index = IdIndex.from_values(ordered["user_id"] if users is None else users)
    item_index = IdIndex.from_values(catalog)
    user_idx = user_index.encode(ordered["user_id"].to_numpy())
    item_idx = item_index.encode(ordered["item_id"].to_numpy())
    if (user_idx < 0).any() or (item_idx < 0).any():
        raise ValueError("fit rows mention users or items outside the given users/catalog")
    weights = ordered["weight"].to_numpy(dtype=np.float32)
    matrix = sp.csr_matrix(
        (weights, (user_idx, item_idx)), shape=(len(user_index), len(item_index))
    )
    matrix.sum_duplicates()
    interactions = ordered.assign(user_idx=user_idx, item_idx=item_idx).reset_index(drop=True)

    meta = item_metadata.drop_duplicates("item_id").set_index("item_id")
    features = meta.reindex(pd.Index(item_index.ids, name="item_id")).reset_index()
    features["item_idx"] = np.arange(len(item_index))
    user_features = None
    if user_metadata is not None:
        user_meta = user_metadata.drop_duplicates("user_id").set_index("user_id")
        user_features = user_meta.reindex(pd.Index(user_index.ids, name="user_id")).reset_index()
        user_features["user_idx"] = np.arange(len(user_index))
    return TrainData(
        users=user_index,
        items=item_index,
        matrix=matrix,
        interactions=interactions,
        item_features=features,
        user_features=user_features,
        now=int(ordered["ts"].max()),
    )


def implicit_callback(progress: FitProgress | None, iterations: int) -> Any:
    """`progress` as the per-iteration callback of an `implicit` model's fit, which it calls
    with the iteration counted from 0, then figures that differ by model (elapsed seconds,
    loss or sampling counts)."""
    if progress is None:
        return None
    return lambda iteration, *_figures: progress(iteration + 1, iterations)
