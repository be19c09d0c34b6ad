"""Reference models on a planted structure, ALS fold-in against implicit, npz round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from batch.data import IdIndex
from batch.models.als import ALSRecommender, bm25_confidence
from batch.models.base import Recommender, TrainData, build_train_data
from batch.models.bpr import BPRRecommender
from batch.models.ease import EASE
from batch.models.itemknn import ItemKNN, item_similarity
from batch.models.popular import MostPopular, RecentPopular
from core.rules import fold_in, gram_matrix

pytestmark = pytest.mark.unit

N_A, N_B = 20, 40  # group B is larger, so its items are the globally popular ones
ITEMS_A = np.arange(0, 10)
ITEMS_B = np.arange(10, 20)


def planted_rows(seed: int = 0) -> pd.DataFrame:
    """Group A users interact with 6 of items 0-9, group B users with 6 of items 10-19."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(N_A + N_B):
        pool = ITEMS_A if user < N_A else ITEMS_B
        for step, item in enumerate(rng.choice(pool, size=6, replace=False)):
            rows.append((f"u{user}", f"i{item}", 1000 * user + step))
    users, items, stamps = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "ts": np.array(stamps, dtype=np.int64),
            "event_type": "rating",
            "weight": np.ones(len(rows), dtype=np.float32),
        }
    )


def planted_data() -> TrainData:
    catalog = np.array([f"i{i}" for i in range(20)], dtype=object)
    metadata = pd.DataFrame({"item_id": catalog, "title": catalog, "genres": [()] * 20})
    return build_train_data(planted_rows(), catalog, metadata)


def group_a_share_of_top(model: Recommender, data: TrainData) -> float:
    """Share of group-A users' unseen slots in the top 4 that go to group-A items."""
    users = np.array([data.users.index(f"u{u}") for u in range(N_A)])
    scores = model.score(users).astype(np.float64)
    scores[data.matrix[users].toarray() > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :4]
    in_a = np.isin(np.asarray(data.items.ids)[top], [f"i{i}" for i in ITEMS_A])
    return float(in_a.mean())


@pytest.mark.parametrize(
    "model",
    [
        ALSRecommender(factors=4, regularization=5.0, alpha=5.0, iterations=15, num_threads=1),
        EASE(regularization=10.0),
        ItemKNN(neighbours=10, shrinkage=1.0),
        BPRRecommender(factors=8, learning_rate=0.05, iterations=200, num_threads=1),
    ],
    ids=lambda model: model.name,
)
def test_personalised_models_recover_the_planted_groups(model: Recommender) -> None:
    data = planted_data()
    model.fit(data)
    assert group_a_share_of_top(model, data) >= 0.95
    assert group_a_share_of_top(MostPopular().fit(data), data) == 0.0  # the check can fail


def test_most_popular_ranks_by_summed_weight() -> None:
    data = planted_data()
    scores = MostPopular().fit(data).score(np.array([0, 1]))
    counts = np.asarray(data.matrix.sum(axis=0)).ravel()
    np.testing.assert_array_equal(scores, np.tile(counts, (2, 1)))


def tiny_train_data(rows: list[tuple[str, str, int]], catalog: list[str]) -> TrainData:
    users, items, stamps = zip(*rows, strict=True)
    frame = pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "ts": np.array(stamps, dtype=np.int64),
            "event_type": "view",
            "weight": np.ones(len(rows), dtype=np.float32),
        }
    )
    metadata = pd.DataFrame({"item_id": catalog, "title": catalog, "genres": [()] * len(catalog)})
    return build_train_data(frame, np.array(catalog, dtype=object), metadata)


def test_recent_popular_counts_the_last_7_days_then_all_time() -> None:
    day = 86_400
    now = 100 * day
    rows = [
        ("u1", "old", 10 * day),
        ("u2", "old", 11 * day),
        ("u3", "old", 12 * day),
        ("u1", "older", 1 * day),
        ("u1", "new", now - 7 * day),  # exactly 7 days old: outside (now - 7d, now]
        ("u2", "new", now - 6 * day),
        ("u3", "fresh", now - day),
        ("u1", "fresh", now),
    ]
    data = tiny_train_data(rows, ["old", "older", "new", "fresh", "unseen"])
    scores = RecentPopular(window_days=7).fit(data).score(np.array([0]))[0]
    order = [str(data.items.ids[i]) for i in np.argsort(-scores, kind="stable")]
    # fresh: 2 recent; new: 1 recent; then by all-time weight: old (3), older (1), unseen (0).
    assert order == ["fresh", "new", "old", "older", "unseen"]


def test_item_similarity_is_shrunk_cosine() -> None:
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1]], dtype=np.float32))
    sims = item_similarity(matrix, neighbours=2, shrinkage=1.0).toarray()
    expected = 1 / (np.sqrt(2) + 1.0)  # dot 1, norms sqrt(2) and 1
    np.testing.assert_allclose(sims, [[0, expected, expected], [expected, 0, 0], [expected, 0, 0]])
    # One neighbour per item: item 1 and 2 keep item 0 only.
    pruned = item_similarity(matrix, neighbours=1, shrinkage=1.0).toarray()
    assert (pruned != 0).sum(axis=0).tolist() == [1, 1, 1]


def test_ease_weights_solve_the_constrained_ridge_problem() -> None:
    data = planted_data()
    model = EASE(regularization=5.0).fit(data)
    dense = data.matrix.toarray().astype(np.float64)
    gram = dense.T @ dense
    for j in (0, 13):
        others = np.delete(np.arange(data.n_items), j)
        ridge = gram[np.ix_(others, others)] + 5.0 * np.eye(len(others))
        column = np.linalg.solve(ridge, gram[others, j])
        np.testing.assert_allclose(model._weights[others, j], column, rtol=1e-4, atol=1e-6)
        assert model._weights[j, j] == 0


def test_als_score_is_the_dot_product_of_its_vectors() -> None:
    data = planted_data()
    model = ALSRecommender(factors=8, iterations=5, num_threads=1).fit(data)
    users = np.arange(data.n_users)
    expected = model.user_vectors() @ model.item_vectors().T
    np.testing.assert_array_equal(model.score(users), expected)
    assert model.user_vectors().dtype == np.float32
    assert model.item_vectors().dtype == np.float32


@pytest.mark.parametrize(
    "model",
    [
        ALSRecommender(factors=8, iterations=5, num_threads=1),
        BPRRecommender(factors=8, iterations=5, num_threads=1),
    ],
    ids=["als", "bpr"],
)
def test_fit_reports_each_iteration(model: ALSRecommender | BPRRecommender) -> None:
    reported: list[tuple[int, int]] = []
    model.fit(planted_data(), lambda done, total: reported.append((done, total)))
    assert reported == [(n, 5) for n in range(1, 6)]


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_fold_in_equals_implicit_recalculate_user(alpha: float) -> None:
    data = planted_data()
    implicit_model = AlternatingLeastSquares(
        factors=8, regularization=0.1, alpha=alpha, iterations=5, random_state=0, num_threads=1
    )
    implicit_model.fit(data.matrix, show_progress=False)
    history = sp.csr_matrix(data.matrix[3], dtype=np.float32)
    history.data = np.array([1.0, 2.0, -1.5, 1.0, 3.0, 1.0], dtype=np.float32)  # incl. a dislike
    expected = implicit_model.recalculate_user(3, history)
    factors = implicit_model.item_factors
    folded = fold_in(
        gram_matrix(factors), factors[history.indices], alpha * history.data, regularization=0.1
    )
    np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-5)


def test_fold_in_of_an_empty_history_is_zero() -> None:
    item_factors = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    folded = fold_in(gram_matrix(item_factors), item_factors[[]], np.array([]), 0.1)
    np.testing.assert_array_equal(folded, np.zeros(3, dtype=np.float32))


def test_bm25_matches_implicit_on_the_transposed_matrix() -> None:
    from implicit.nearest_neighbours import bm25_weight

    matrix = planted_data().matrix
    ours = bm25_confidence(matrix).toarray()
    theirs = sp.csr_matrix(bm25_weight(matrix.T.tocsr(), K1=100, B=0.8)).T.toarray()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_als_npz_round_trip(tmp_path: Path) -> None:
    data = planted_data()
    model = ALSRecommender(factors=4, iterations=3, weighting="bm25", num_threads=1).fit(data)
    path = tmp_path / "als.npz"
    model.save(path)
    loaded = ALSRecommender.load(path)
    assert loaded.params() == model.params()
    np.testing.assert_array_equal(loaded.user_vectors(), model.user_vectors())
    np.testing.assert_array_equal(loaded.item_vectors(), model.item_vectors())
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


def test_als_zeroes_users_without_interactions() -> None:
    data = planted_data()
    cold = TrainData(
        users=IdIndex(np.append(data.users.ids, "cold").astype(object)),
        items=data.items,
        matrix=sp.vstack([data.matrix, sp.csr_matrix((1, data.n_items))]).tocsr(),
        interactions=data.interactions,
        item_features=data.item_features,
        user_features=None,
        now=data.now,
    )
    model = ALSRecommender(factors=4, iterations=3, num_threads=1).fit(cold)
    np.testing.assert_array_equal(model.user_vectors()[-1], np.zeros(4, dtype=np.float32))
