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
    picked = [int(order[0])]
    available = np.ones(n, dtype=bool)
    available[picked[0]] = False
    redundancy = unit @ unit[picked[0]]
    while len(picked) < k:
        gain = np.where(available, lambda_ * scaled - (1.0 - lambda_) * redundancy, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, unit @ unit[best])
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
