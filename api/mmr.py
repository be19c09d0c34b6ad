"""Maximal Marginal Relevance: re-rank candidates to trade a little relevance for diversity."""

from __future__ import annotations

import numpy as np


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero): the directions `mmr` compares."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def mmr(relevance: np.ndarray, unit_vectors: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Pick `k` candidate indices greedily by lambda * relevance - (1 - lambda) * redundancy.

    Parameters
    ----------
    relevance : (n,) scores, higher is better (any scale: they are min-max scaled to [0, 1] so
        that lambda weighs them against cosine similarities, which live in [-1, 1]).
    unit_vectors : (n, d) candidate item vectors of unit length (`unit_rows`); redundancy is
        the highest cosine similarity to an item already picked. Unit length is the caller's
        part because the API's item table holds its vectors so, once per model version.
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
    if lambda_ >= 1.0:
        return [int(i) for i in np.argsort(-relevance, kind="stable")[:k]]
    low, high = relevance.min(), relevance.max()
    spread = float(high - low)
    scaled = (relevance - low) / spread if spread > 0 else np.ones(n, dtype=relevance.dtype)
    # gain(j) = lambda * scaled(j) - (1 - lambda) * max over picked p of similarity(p, j)
    #         = min over picked p of after_picking[p, j]
    # so one matrix holds every pick's effect, and each pick costs one elementwise minimum:
    # this runs on every request, where each numpy call costs microseconds.
    after_picking = lambda_ * scaled - (1.0 - lambda_) * (unit_vectors @ unit_vectors.T)
    # Picking an item rules it out: its own row's minimum then puts it at -inf for good.
    np.fill_diagonal(after_picking, -np.inf)
    first = int(np.argmax(relevance))  # the first of equals, as a stable sort would put it
    picked = [first]
    gain = after_picking[first].copy()
    while len(picked) < k:
        best = int(gain.argmax())
        picked.append(best)
        np.minimum(gain, after_picking[best], out=gain)
    return picked


def intra_list_similarity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine similarity of a list: lower means more diverse."""
    n = len(vectors)
    if n < 2:
        return 0.0
    unit = unit_rows(vectors)
    similarity = unit @ unit.T
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))
