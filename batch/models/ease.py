"""EASE^R (Steck, 2019): a closed-form linear item-item autoencoder."""

from __future__ import annotations

from typing import Any, Self

import numpy as np

from batch.models.base import Recommender, TrainData


class EASE(Recommender):
    """score(u) = x_u B with B = I - P diag(1 / diag(P)), P = (X^T X + lambda I)^-1, diag(B) = 0.

    Memory and time are dense in the catalog size: n_items^2 floats and an n_items^3 inverse.

    Parameters
    ----------
    regularization : float
        The L2 penalty lambda on B.
    """

    name = "ease"

    def __init__(self, regularization: float = 500.0) -> None:
        self.regularization = regularization

    def fit(self, data: TrainData) -> Self:
        matrix = data.matrix.astype(np.float64)
        gram = np.asarray((matrix.T @ matrix).toarray())
        gram[np.diag_indices_from(gram)] += self.regularization
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self._weights = weights.astype(np.float32)
        self._user_items = data.matrix.astype(np.float32).tocsr()
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self._user_items[user_idx] @ self._weights
        return np.asarray(scores, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"regularization": self.regularization}
