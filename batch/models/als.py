"""Implicit-feedback ALS (Hu, Koren & Volinsky, 2008) via `implicit`, plus a numpy fold-in.

ALS is the default served model: `score` is the inherited dot product of the vectors it exposes,
so offline figures describe exactly what serving computes. The fold-in that recomputes one user's
vector with the item factors fixed, as implicit's `recalculate_user` does, is the shared rule
`core.rules.fold_in`: the stream worker and batch evaluation both call it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from batch.models.base import EmbeddingRecommender, FitProgress, TrainData, implicit_callback

WEIGHTINGS = ("none", "bm25")
# BM25 constants of implicit's own examples: saturation K1 and length normalisation B.
BM25_K1 = 100.0
BM25_B = 0.8


class ALSRecommender(EmbeddingRecommender):
    """Weighted matrix factorisation on confidences c_ui = alpha * w_ui (implicit's convention).

    implicit's solver weighs an observed pair by c_ui and an unobserved one by 1, minimising
    sum_ui c_ui (p_ui - x_u.y_i)^2 + regularization (|X|^2 + |Y|^2) with p_ui = 1 if observed.

    Parameters
    ----------
    factors : int
        Dimension of the user and item vectors.
    regularization : float
        L2 penalty on the vectors.
    alpha : float
        Confidence scaling of observed interactions.
    iterations : int
        ALS sweeps (each solves users then items).
    weighting : {"none", "bm25"}
        Reweighting of the interaction weights before the alpha scaling ("bm25": per-user idf
        and per-item length normalisation, as in implicit's examples; see `bm25_confidence`).
    random_state : int
        Seed of the factor initialisation.
    num_threads : int
        Fitting threads (0: every core).
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        weighting: str = "none",
        random_state: int = 0,
        num_threads: int = 0,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.weighting = weighting
        self.random_state = random_state
        self.num_threads = num_threads
        self._user_vectors = np.zeros((0, factors), dtype=np.float32)
        self._item_vectors = np.zeros((0, factors), dtype=np.float32)

    def fit(self, data: TrainData, progress: FitProgress | None = None) -> Self:
        confidence = self.alpha * weighted_interactions(data.matrix, self.weighting)
        # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(
                sp.csr_matrix(confidence, dtype=np.float32),
                show_progress=False,
                callback=implicit_callback(progress, self.iterations),
            )
        user_vectors = np.asarray(model.user_factors, dtype=np.float32)
        # A user without interactions keeps its random start under the CG solver; the exact
        # solution (and `core.rules.fold_in` of an empty history) is the zero vector.
        user_vectors[np.diff(data.matrix.indptr) == 0] = 0.0
        self._user_vectors = user_vectors
        self._item_vectors = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def user_vectors(self) -> np.ndarray:
        return self._user_vectors

    def item_vectors(self) -> np.ndarray:
        return self._item_vectors

    def params(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "weighting": self.weighting,
            "random_state": self.random_state,
        }

    def save(self, path: Path) -> None:
        """Vectors and hyperparameters as plain arrays (.npz, no pickle)."""
        np.savez(
            path,
            user_vectors=self._user_vectors,
            item_vectors=self._item_vectors,
            params=np.array(json.dumps(self.params())),
        )

    @classmethod
    def load(cls, path: Path) -> ALSRecommender:
        """Read a model written by `save`."""
        with np.load(path, allow_pickle=False) as arrays:
            model = cls(**json.loads(str(arrays["params"])))
            model._user_vectors = arrays["user_vectors"]
            model._item_vectors = arrays["item_vectors"]
        return model


def weighted_interactions(matrix: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """The interaction weights `matrix` (users x items) after `weighting` ("none" or "bm25")."""
    if weighting == "bm25":
        return bm25_confidence(matrix)
    return sp.csr_matrix(matrix, dtype=np.float32)


def bm25_confidence(matrix: sp.csr_matrix, k1: float = BM25_K1, b: float = BM25_B) -> sp.csr_matrix:
    """BM25 reweighting of a (users x items) matrix, items as documents and users as terms.

    w'_ui = w_ui (k1 + 1) / (k1 L_i + w_ui) * idf_u with idf_u = log(n_items) - log(1 + n_u)
    (n_u: the user's item count) and L_i = (1 - b) + b |i| / mean |i| (|i|: item i's summed
    weight). Heavy users' interactions weigh less each; so do those with very popular items.
    Identical to `implicit.nearest_neighbours.bm25_weight` applied to the items x users matrix.
    """
    coo = sp.coo_matrix(matrix, dtype=np.float64)
    idf = np.log(coo.shape[1]) - np.log1p(np.bincount(coo.row, minlength=coo.shape[0]))
    item_weight = np.bincount(coo.col, weights=coo.data, minlength=coo.shape[1])
    length_norm = (1.0 - b) + b * item_weight / item_weight[item_weight > 0].mean()
    data = coo.data * (k1 + 1.0) / (k1 * length_norm[coo.col] + coo.data) * idf[coo.row]
    return sp.csr_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=coo.shape)
