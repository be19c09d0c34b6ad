"""Bayesian Personalised Ranking (Rendle et al., 2009) via `implicit`."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from batch.models.base import EmbeddingRecommender, FitProgress, TrainData, implicit_callback


class BPRRecommender(EmbeddingRecommender):
    """Matrix factorisation trained by SGD on sampled (user, positive, negative) triples.

    implicit appends an item bias as the last item-vector column (and a constant 1 to every
    user vector), so the exposed vectors have `factors + 1` columns and their dot product is
    the full score.

    Parameters
    ----------
    factors : int
        Latent dimension (without the bias column).
    learning_rate : float
        SGD step size.
    regularization : float
        L2 penalty.
    iterations : int
        Epochs over the observed interactions.
    random_state : int
        Seed of initialisation and sampling.
    num_threads : int
        Fitting threads (0: every core); SGD results vary slightly with more than one.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads
        self._user_vectors = np.zeros((0, factors + 1), dtype=np.float32)
        self._item_vectors = np.zeros((0, factors + 1), dtype=np.float32)

    def fit(self, data: TrainData, progress: FitProgress | None = None) -> Self:
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(
                sp.csr_matrix(data.matrix, dtype=np.float32),
                show_progress=False,
                callback=implicit_callback(progress, self.iterations),
            )
        self._user_vectors = np.asarray(model.user_factors, dtype=np.float32)
        self._item_vectors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def user_vectors(self) -> np.ndarray:
        return self._user_vectors

    def item_vectors(self) -> np.ndarray:
        return self._item_vectors

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "random_state": self.random_state,
        }
