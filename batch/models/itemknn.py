"""Item-based k-nearest-neighbours with shrunk cosine similarity."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp

from batch.models.base import Recommender, TrainData

# Target items whose similarity rows are computed densely at once (bounds memory).
_ITEM_CHUNK = 1024


class ItemKNN(Recommender):
    """score(u, j) = sum of sim(i, j) over the user's items i among j's `neighbours` nearest.

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrinkage), where x_i is item i's column of the
    interaction matrix; shrinkage pulls similarities backed by few co-occurrences towards 0.

    Parameters
    ----------
    neighbours : int
        Most similar items kept per target item (top-k pruning).
    shrinkage : float
        Added to the denominator of the cosine.
    """

    name = "itemknn"

    def __init__(self, neighbours: int = 100, shrinkage: float = 10.0) -> None:
        self.neighbours = neighbours
        self.shrinkage = shrinkage

    def fit(self, data: TrainData) -> Self:
        matrix = data.matrix.astype(np.float32)
        self._user_items = matrix.tocsr()
        self._similarity = item_similarity(matrix, self.neighbours, self.shrinkage)
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        # Column j of the similarity matrix holds j's neighbours, so X_u @ S sums them.
        scores = self._user_items[user_idx] @ self._similarity
        return np.asarray(scores.toarray(), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "shrinkage": self.shrinkage}


def item_similarity(matrix: sp.csr_matrix, neighbours: int, shrinkage: float) -> sp.csc_matrix:
    """Pruned shrunk-cosine similarity, (n_items x n_items), column j = j's neighbours.

    Parameters
    ----------
    matrix : csr_matrix
        (n_users x n_items) interaction weights.
    neighbours : int
        Nonzero similarities kept per column (ties broken arbitrarily).
    shrinkage : float
        Added to the product of the norms.

    Returns
    -------
    csc_matrix
    """
    item_user = sp.csr_matrix(matrix.T)
    n_items = item_user.shape[0]
    norms = np.sqrt(np.asarray(item_user.multiply(item_user).sum(axis=1)).ravel())
    keep = min(neighbours, n_items - 1)
    rows, cols, values = [], [], []
    for start in range(0, n_items, _ITEM_CHUNK):
        stop = min(start + _ITEM_CHUNK, n_items)
        dots = (item_user[start:stop] @ item_user.T).toarray()
        sims = dots / (norms[start:stop, None] * norms[None, :] + shrinkage + 1e-12)
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if keep <= 0:
            continue
        top = np.argpartition(-sims, keep - 1, axis=1)[:, :keep]
        top_sims = np.take_along_axis(sims, top, axis=1)
        positive = top_sims > 0
        targets = np.broadcast_to(np.arange(start, stop)[:, None], top.shape)
        rows.append(top[positive])
        cols.append(targets[positive])
        values.append(top_sims[positive])
    if not rows:
        return sp.csc_matrix((n_items, n_items), dtype=np.float32)
    return sp.csc_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
    )
