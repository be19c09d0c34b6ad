"""Full-ranking top-K metrics, computed per evaluated user in batches.

For each batch of users: scores over the whole catalog -> the user's excluded items set to -inf
-> a stable sort (equal scores keep the lower item index first) -> the 1-based rank of every
target. Metric definitions follow ../shared/protocols.md:

- Recall@K = hits in top K / |targets| (no min(K, |targets|) cap); Precision@K = hits / K.
- HitRate@K = 1 if a target is in the top K.
- NDCG@K: binary gains, log2 discount, ideal DCG over min(|targets|, K) positions.
- MRR: 1 / rank of the best-ranked target in the full ranking (0 if every target is excluded).
- Coverage@K = |union of the evaluated users' top K| / catalog size.
- Diversity@10: mean intra-list dissimilarity of the top 10, 1 - Jaccard of the two items'
  genre sets (two items without genres count as dissimilar, similarity 0/0 := 0).
- Novelty@10: mean self-information -log2 p(i) of the top 10 items, where p(i) = (fit users who
  interacted with i + 1) / (fit users + 1); the +1 keeps never-seen items finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from batch.evaluation.protocols import EncodedTargets

# Longest list a curve or coverage is computed for, and the list length of diversity/novelty.
MAX_K = 50
LIST_K = 10
BATCH_USERS = 512
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class RankingOutcome:
    """Per-user outcome of ranking the whole catalog.

    hits: bool (n_users x max_k), hits[u, r] = a target sits at rank r + 1.
    n_targets: (n_users,) number of targets per user.
    best_rank: (n_users,) rank of the best-ranked target (inf if every target is excluded).
    top_items: (n_users x max_k) item indices of the top of each ranking.
    """

    hits: np.ndarray
    n_targets: np.ndarray
    best_rank: np.ndarray
    top_items: np.ndarray

    @property
    def max_k(self) -> int:
        return int(self.hits.shape[1])


def rank_users(
    score: Callable[[np.ndarray], np.ndarray],
    encoded: EncodedTargets,
    max_k: int = MAX_K,
    batch_users: int = BATCH_USERS,
    on_batch: Callable[[int], None] | None = None,
) -> RankingOutcome:
    """Rank the whole catalog for every evaluated user, in batches of users.

    Parameters
    ----------
    score : callable
        Maps an array of user indices to a (len x n_items) score matrix (`Recommender.score`).
    encoded : EncodedTargets
        Evaluated users with their targets and exclusions.
    max_k : int
        Length of the top lists kept (curves are computed up to it).
    batch_users : int
        Users scored at once; bounds memory to batch_users x n_items scores.
    on_batch : callable, optional
        Called with the number of users after each batch (progress bars).

    Returns
    -------
    RankingOutcome
    """
    parts = []
    for start in range(0, len(encoded.user_idx), batch_users):
        stop = min(start + batch_users, len(encoded.user_idx))
        scores = np.asarray(score(encoded.user_idx[start:stop]), dtype=np.float64)
        parts.append(
            rank_batch(scores, encoded.targets[start:stop], encoded.excluded[start:stop], max_k)
        )
        if on_batch is not None:
            on_batch(stop - start)
    return RankingOutcome(
        hits=np.concatenate([p.hits for p in parts]),
        n_targets=np.concatenate([p.n_targets for p in parts]),
        best_rank=np.concatenate([p.best_rank for p in parts]),
        top_items=np.concatenate([p.top_items for p in parts]),
    )


def rank_batch(
    scores: np.ndarray, targets: sp.csr_matrix, excluded: sp.csr_matrix, max_k: int = MAX_K
) -> RankingOutcome:
    """Rank one batch: `scores` (n x n_items), bool `targets`/`excluded` csr (n x n_items)."""
    scores = np.array(scores, dtype=np.float64)
    n_users, n_items = scores.shape
    max_k = min(max_k, n_items)
    excluded = sp.csr_matrix(excluded)
    scores[excluded.nonzero()] = -np.inf
    # A stable sort of the negated scores keeps equal scores in index order: lower index first.
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, n_items + 1)[None, :], axis=1)

    targets = sp.csr_matrix(targets)
    target_rows, target_cols = targets.nonzero()
    target_ranks = ranks[target_rows, target_cols].astype(np.float64)
    target_ranks[np.asarray(excluded[target_rows, target_cols]).ravel()] = np.inf

    hits = np.zeros((n_users, max_k), dtype=bool)
    in_top = target_ranks <= max_k
    hits[target_rows[in_top], target_ranks[in_top].astype(np.int64) - 1] = True
    best_rank = np.full(n_users, np.inf)
    np.minimum.at(best_rank, target_rows, target_ranks)
    return RankingOutcome(
        hits=hits,
        n_targets=np.diff(targets.indptr),
        best_rank=best_rank,
        top_items=order[:, :max_k],
    )


def per_user_metrics(outcome: RankingOutcome, k: int) -> dict[str, np.ndarray]:
    """Recall, precision, hit rate and NDCG at `k` per user, plus reciprocal rank."""
    hits = outcome.hits[:, :k]
    n_hits = hits.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts
    ideal = np.cumsum(discounts)[np.minimum(outcome.n_targets, k) - 1]
    return {
        "recall": n_hits / outcome.n_targets,
        "precision": n_hits / k,
        "hr": (n_hits > 0).astype(np.float64),
        "ndcg": dcg / ideal,
        "rr": 1.0 / outcome.best_rank,
    }


def metric_curves(outcome: RankingOutcome) -> dict[str, np.ndarray]:
    """Mean NDCG@K and Recall@K for K = 1..max_k (index K - 1)."""
    positions = np.arange(1, outcome.max_k + 1)
    discounts = 1.0 / np.log2(positions + 1)
    dcg = np.cumsum(outcome.hits * discounts, axis=1)
    ideal_len = np.minimum(outcome.n_targets[:, None], positions[None, :])
    ideal = np.cumsum(discounts)[ideal_len - 1]
    recall = np.cumsum(outcome.hits, axis=1) / outcome.n_targets[:, None]
    return {"ndcg": (dcg / ideal).mean(axis=0), "recall": recall.mean(axis=0)}


def coverage(top_items: np.ndarray, k: int, n_items: int) -> float:
    """|union of every user's top k| / catalog size."""
    return len(np.unique(top_items[:, :k])) / n_items


def genre_matrix(genres: list[tuple[str, ...]]) -> np.ndarray:
    """Bool (n_items x n_genres) one-hot matrix of item genre tuples (in item index order)."""
    names = sorted({g for item_genres in genres for g in item_genres})
    column = {g: j for j, g in enumerate(names)}
    matrix = np.zeros((len(genres), len(names)), dtype=bool)
    for i, item_genres in enumerate(genres):
        matrix[i, [column[g] for g in item_genres]] = True
    return matrix


def intra_list_diversity(top_items: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """Per user: mean over item pairs of the list of 1 - Jaccard(genre sets)."""
    lists = genres[top_items].astype(np.float64)  # users x k x n_genres
    intersection = np.einsum("ukg,ulg->ukl", lists, lists)
    sizes = lists.sum(axis=2)
    union = sizes[:, :, None] + sizes[:, None, :] - intersection
    jaccard = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
    k = top_items.shape[1]
    pairs = np.triu_indices(k, 1)
    result: np.ndarray = (1.0 - jaccard[:, pairs[0], pairs[1]]).mean(axis=1)
    return result


def self_information(user_item: sp.csr_matrix) -> np.ndarray:
    """-log2 p(i) per item, p(i) = (users who interacted with i + 1) / (users + 1)."""
    users_per_item = np.asarray((user_item > 0).sum(axis=0)).ravel()
    result: np.ndarray = -np.log2((users_per_item + 1) / (user_item.shape[0] + 1))
    return result


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean."""
    if len(values) < 2:
        return float("nan")
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def bootstrap_ci(
    values: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling users with replacement.

    Parameters
    ----------
    values : ndarray
        One value per evaluated user.
    seed : int
        Seed of the resampling, so reports are reproducible.
    samples : int
        Number of bootstrap resamples.
    level : float
        Coverage of the interval.

    Returns
    -------
    (low, high) : tuple of float
    """
    rng = np.random.default_rng(seed)
    n = len(values)
    # Resample in chunks so memory stays bounded for large user counts.
    chunk = max(1, 2_000_000 // max(n, 1))
    means = np.concatenate(
        [
            values[rng.integers(0, n, size=(min(chunk, samples - done), n))].mean(axis=1)
            for done in range(0, samples, chunk)
        ]
    )
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(
    outcome: RankingOutcome,
    n_items: int,
    self_info: np.ndarray,
    genres: np.ndarray | None,
    k: int = LIST_K,
    seed: int = 0,
) -> dict[str, float | list[float] | None]:
    """Mean metrics at `k` with the standard error and bootstrap 95% interval of NDCG@k.

    `self_info` is `self_information` of the fit matrix; `genres` a `genre_matrix` (None when
    the dataset has no genres: diversity is then None).
    """
    per_user = per_user_metrics(outcome, k)
    ndcg = per_user["ndcg"]
    top = outcome.top_items[:, :LIST_K]
    diversity = None if genres is None else float(intra_list_diversity(top, genres).mean())
    return {
        f"ndcg@{k}": float(ndcg.mean()),
        f"ndcg@{k}_se": standard_error(ndcg),
        f"ndcg@{k}_ci95": list(bootstrap_ci(ndcg, seed=seed)),
        f"recall@{k}": float(per_user["recall"].mean()),
        f"precision@{k}": float(per_user["precision"].mean()),
        f"hr@{k}": float(per_user["hr"].mean()),
        "mrr": float(per_user["rr"].mean()),
        f"coverage@{k}": coverage(outcome.top_items, k, n_items),
        f"diversity@{LIST_K}": diversity,
        f"novelty@{LIST_K}": float(self_info[top].mean()),
    }
