"""Every metric against values computed by hand on tiny rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from batch.evaluation.metrics import (
    RankingOutcome,
    bootstrap_ci,
    coverage,
    genre_matrix,
    intra_list_diversity,
    metric_curves,
    per_user_metrics,
    rank_batch,
    rank_users,
    self_information,
    standard_error,
    summarize,
)
from batch.evaluation.protocols import EncodedTargets

pytestmark = pytest.mark.unit

LOG3 = math.log2(3)


def bool_rows(rows: list[list[int]], n_items: int = 5) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=bool)
    for r, items in enumerate(rows):
        dense[r, items] = True
    return sp.csr_matrix(dense)


# User 0: item 3 (the best score) is excluded and items 1 and 2 tie, so the ranking is
# 1, 2, 4, 0, 3 and the targets 2 and 4 sit at ranks 2 and 3.
# User 1: all scores tie, so the ranking is index order; targets 0, 1, 4 at ranks 1, 2, 5.
# User 2: its only target is excluded, so it can never be hit.
SCORES = np.array(
    [
        [0.1, 0.5, 0.5, 0.9, 0.2],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
TARGETS = bool_rows([[2, 4], [0, 1, 4], [0]])
EXCLUDED = bool_rows([[3], [], [0]])


@pytest.fixture
def outcome() -> RankingOutcome:
    return rank_batch(SCORES, TARGETS, EXCLUDED, max_k=5)


def test_ranking_breaks_ties_by_lower_index_and_drops_excluded(outcome: RankingOutcome) -> None:
    assert outcome.top_items.tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 0]]
    assert outcome.hits.astype(int).tolist() == [
        [0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ]
    assert outcome.n_targets.tolist() == [2, 3, 1]
    assert outcome.best_rank.tolist() == [2.0, 1.0, math.inf]


def test_metrics_at_2(outcome: RankingOutcome) -> None:
    m = per_user_metrics(outcome, 2)
    np.testing.assert_allclose(m["recall"], [1 / 2, 2 / 3, 0])  # no min(K, |T|) cap
    np.testing.assert_allclose(m["precision"], [1 / 2, 1, 0])
    np.testing.assert_allclose(m["hr"], [1, 1, 0])
    # Ideal DCG over min(|T|, 2) = 2 positions for both users 0 and 1.
    np.testing.assert_allclose(m["ndcg"], [(1 / LOG3) / (1 + 1 / LOG3), 1.0, 0.0])
    np.testing.assert_allclose(m["rr"], [1 / 2, 1, 0])


def test_metrics_at_3_and_1(outcome: RankingOutcome) -> None:
    m3 = per_user_metrics(outcome, 3)
    np.testing.assert_allclose(m3["recall"], [1, 2 / 3, 0])
    np.testing.assert_allclose(m3["precision"], [2 / 3, 2 / 3, 0])
    ndcg0 = (1 / LOG3 + 1 / 2) / (1 + 1 / LOG3)
    ndcg1 = (1 + 1 / LOG3) / (1 + 1 / LOG3 + 1 / 2)
    np.testing.assert_allclose(m3["ndcg"], [ndcg0, ndcg1, 0])
    m1 = per_user_metrics(outcome, 1)
    np.testing.assert_allclose(m1["ndcg"], [0, 1, 0])
    np.testing.assert_allclose(m1["hr"], [0, 1, 0])


def test_curves_match_pointwise_metrics(outcome: RankingOutcome) -> None:
    curves = metric_curves(outcome)
    for k in range(1, 6):
        m = per_user_metrics(outcome, k)
        assert curves["ndcg"][k - 1] == pytest.approx(m["ndcg"].mean())
        assert curves["recall"][k - 1] == pytest.approx(m["recall"].mean())


def test_coverage_counts_the_union_of_top_lists(outcome: RankingOutcome) -> None:
    # Top 2 lists: {1, 2}, {0, 1}, {1, 2} -> {0, 1, 2}.
    assert coverage(outcome.top_items, 2, 5) == pytest.approx(3 / 5)
    assert coverage(outcome.top_items, 1, 5) == pytest.approx(2 / 5)


def test_batched_ranking_equals_one_batch() -> None:
    encoded = EncodedTargets(user_idx=np.arange(3), targets=TARGETS, excluded=EXCLUDED)
    seen: list[int] = []
    batched = rank_users(
        lambda users: SCORES[users], encoded, max_k=5, batch_users=2, on_batch=seen.append
    )
    whole = rank_batch(SCORES, TARGETS, EXCLUDED, max_k=5)
    assert seen == [2, 1]
    np.testing.assert_array_equal(batched.hits, whole.hits)
    np.testing.assert_array_equal(batched.top_items, whole.top_items)
    np.testing.assert_array_equal(batched.best_rank, whole.best_rank)


def test_intra_list_diversity_is_mean_pairwise_jaccard_distance() -> None:
    genres = genre_matrix([("A",), ("A", "B"), ("B",), (), ()])
    # Pairs (0,1): 1 - 1/2, (0,2): 1 - 0, (1,2): 1 - 1/2 -> 2/3; two genre-less items: 1.
    result = intra_list_diversity(np.array([[0, 1, 2], [3, 4, 0]]), genres)
    np.testing.assert_allclose(result, [2 / 3, 1.0])


def test_self_information_uses_add_one_user_shares() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float32))
    # Item 0: (3 + 1) / 4 -> 0 bits; item 1: 2 / 4 -> 1 bit; item 2: 1 / 4 -> 2 bits.
    np.testing.assert_allclose(self_information(matrix), [0.0, 1.0, 2.0])


def test_standard_error_and_bootstrap() -> None:
    assert standard_error(np.array([0.0, 1.0])) == pytest.approx(0.5)
    assert bootstrap_ci(np.full(20, 0.3)) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(1).random(200)
    low, high = bootstrap_ci(values, seed=7)
    assert low < values.mean() < high
    assert bootstrap_ci(values, seed=7) == (low, high)  # seeded: reproducible


def test_summarize_reports_the_named_keys(outcome: RankingOutcome) -> None:
    info = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    genres = genre_matrix([("A",), ("A", "B"), ("B",), (), ()])
    summary = summarize(outcome, 5, info, genres, k=2)
    assert summary["recall@2"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert summary["coverage@2"] == pytest.approx(3 / 5)
    assert summary["mrr"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # Novelty over each user's top 10 (here all 5 items): mean of info = 2.
    assert summary["novelty@10"] == pytest.approx(2.0)
    assert set(summary) >= {"ndcg@2", "ndcg@2_se", "ndcg@2_ci95", "precision@2", "hr@2"}
