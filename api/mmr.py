"""Maximal Marginal Relevance: re-rank candidates to trade a little relevance for diversity."""

from __future__ import annotations

import numpy as np


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Pick `k` candidate indices greedily by lambda * relevance - (1 - lambda) * redundancy.

    Parameters
    ----------
    relevance : (n,) scores, higher is better (any scale: they are min-max scaled to [0, 1] so
        that lambda weighs them against cosine similarities, which live in [-1, 1]).
    vectors : (n, d) candidate item vectors; redundancy is the highest cosine similarity to an
        item already picked.
    k : how many to pick (fewer if there are fewer candidates).
    lambda_ : 1.0 is pure relevance order; lower values favour items unlike those picked.

    Returns
    -------
    Indices into the candidates, in the order picked, without repeats.
    """
    n = len(relevance)
    k = min(k, n)
    if k <= 0:
        return []
    order = np.argsort(-relevance, kind="stable")
    if lambda_ >= 1.0:
        return [int(i) for i in order[:k]]
    spread = float(relevance.max() - relevance.min())
    scaled = (relevance - relevance.min()) / spread if spread > 0 else np.ones(n)
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    # All pairwise similarities in one product: the loop then only does cheap row operations,
    # which matters at the API's per-request budget (a few numpy calls per pick).
    similarity = unit @ unit.T
    relevance_term = lambda_ * scaled
    redundancy_weight = 1.0 - lambda_
    picked = [int(order[0])]
    taken = np.zeros(n)  # -inf once picked
    taken[picked[0]] = -np.inf
    redundancy = similarity[picked[0]].copy()
    while len(picked) < k:
        gain = relevance_term - redundancy_weight * redundancy + taken
        best = int(np.argmax(gain))
        picked.append(best)
        taken[best] = -np.inf
        np.maximum(redundancy, similarity[best], out=redundancy)
    return picked


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine similarity of a list: lower means more diverse."""
    n = len(vectors)
    if n < 2:
        return 0.0
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    similarity = unit @ unit.T
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))
