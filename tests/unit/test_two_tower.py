"""The two-tower model on synthetic data with a planted taste structure.

Users fall into taste clusters; cluster c prefers genres c and c+1 (mod the number of genres),
so every genre is liked by its own pair of clusters and is told apart by behaviour, not only by
metadata. Popularity is spread evenly over the genres, so popularity alone ranks poorly and
beating it clearly means the model found the clusters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from batch.models.base import TrainData, build_train_data
from batch.models.two_tower import TwoTowerRecommender

pytestmark = pytest.mark.unit

N_CLUSTERS = 6
GENRES = [f"genre{g}" for g in range(N_CLUSTERS)]
ITEMS_PER_GENRE = 30
USERS_PER_CLUSTER = 30
HISTORY = 25
COLD_ITEMS = [("cold0", "genre0"), ("cold4", "genre4")]


def _synthetic() -> tuple[TrainData, pd.DataFrame, pd.DataFrame]:
    """(train data, held-out last row per user, item metadata)."""
    rng = np.random.default_rng(7)
    items = pd.DataFrame(
        {
            "item_id": [f"i{g}_{k}" for g in range(len(GENRES)) for k in range(ITEMS_PER_GENRE)],
            "title": [f"Film {rng.integers(10_000)}" for _ in range(len(GENRES) * ITEMS_PER_GENRE)],
            "genres": [(GENRES[g],) for g in range(len(GENRES)) for _ in range(ITEMS_PER_GENRE)],
            "year": pd.array(
                rng.integers(1970, 2020, len(GENRES) * ITEMS_PER_GENRE), dtype="Int64"
            ),
        }
    )
    cold = pd.DataFrame(
        {
            "item_id": [item_id for item_id, _ in COLD_ITEMS],
            "title": ["Brand New Film", "Another New Film"],
            "genres": [(genre,) for _, genre in COLD_ITEMS],
            "year": pd.array([2019, 2019], dtype="Int64"),
        }
    )
    items = pd.concat([items, cold], ignore_index=True)
    # Zipf-like popularity within each genre, the same shape for every genre.
    within = 1.0 / np.arange(1, ITEMS_PER_GENRE + 1) ** 0.6
    rows, users = [], []
    ts = 0
    for cluster in range(N_CLUSTERS):
        liked = [cluster, (cluster + 1) % len(GENRES)]
        for u in range(USERS_PER_CLUSTER):
            user_id = f"u{cluster}_{u}"
            users.append({"user_id": user_id, "age": int(rng.integers(18, 70)), "job": "x"})
            for _ in range(HISTORY):
                genre = rng.choice(liked) if rng.random() < 0.9 else rng.integers(len(GENRES))
                k = rng.choice(ITEMS_PER_GENRE, p=within / within.sum())
                ts += int(rng.integers(1, 100))
                rows.append((user_id, f"i{genre}_{k}", ts))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame = frame.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    frame["event_type"] = "view"
    frame["weight"] = np.float32(1.0)
    test = frame.groupby("user_id").tail(1)
    train = frame.drop(test.index)
    data = build_train_data(train, items["item_id"], items, pd.DataFrame(users))
    return data, test, items


def _hit_rate(scores: np.ndarray, data: TrainData, test: pd.DataFrame) -> float:
    users = data.users.encode(test["user_id"].to_numpy())
    targets = data.items.encode(test["item_id"].to_numpy())
    scores = scores.astype(np.float64).copy()
    scores[data.matrix[users].nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float((top == targets[:, None]).any(axis=1).mean())


def _small_model(epochs: int, seed: int = 0) -> TwoTowerRecommender:
    return TwoTowerRecommender(
        dim=32, epochs=epochs, batch_size=256, history_len=20, hash_buckets=256, seed=seed
    )


@pytest.fixture(scope="module")
def synthetic() -> tuple[TrainData, pd.DataFrame, pd.DataFrame]:
    return _synthetic()


@pytest.fixture(scope="module")
def model(synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame]) -> TwoTowerRecommender:
    torch.set_num_threads(2)
    return _small_model(epochs=15).fit(synthetic[0])


def test_learns_planted_clusters_above_popularity(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame], model: TwoTowerRecommender
) -> None:
    data, test, _ = synthetic
    users = data.users.encode(test["user_id"].to_numpy())
    popularity = np.asarray(data.matrix.sum(axis=0), dtype=np.float64).ravel()
    popular_hr = _hit_rate(np.tile(popularity, (len(users), 1)), data, test)
    model_hr = _hit_rate(model.score(users), data, test)
    assert model_hr > 2 * popular_hr, (model_hr, popular_hr)
    assert model_hr > popular_hr + 0.12, (model_hr, popular_hr)


def test_cold_item_neighbours_share_its_genre(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame], model: TwoTowerRecommender
) -> None:
    data, _, items = synthetic
    vectors = model.item_vectors()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    genre_of = dict(zip(items["item_id"], items["genres"], strict=True))
    cold_rows = {data.items.index(item_id) for item_id, _ in COLD_ITEMS}
    for item_id, genre in COLD_ITEMS:
        row = data.items.index(item_id)
        similarity = unit @ unit[row]
        similarity[list(cold_rows)] = -np.inf
        neighbours = np.argsort(-similarity, kind="stable")[:10]
        shared = sum(genre in genre_of[data.items.ids[n]] for n in neighbours)
        assert shared >= 8, (item_id, shared)


def test_score_is_user_vectors_times_item_vectors(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame], model: TwoTowerRecommender
) -> None:
    data, _, _ = synthetic
    users = np.arange(data.n_users)[::7]
    expected = model.user_vectors()[users] @ model.item_vectors().T
    scores = model.score(users)
    assert scores.dtype == np.float32
    assert model.user_vectors().shape == (data.n_users, 32)
    assert model.item_vectors().shape == (data.n_items, 32)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_same_seed_same_vectors_other_seed_differs(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame],
) -> None:
    data = synthetic[0]
    first = _small_model(epochs=1, seed=3).fit(data)
    again = _small_model(epochs=1, seed=3).fit(data)
    other = _small_model(epochs=1, seed=4).fit(data)
    np.testing.assert_array_equal(first.item_vectors(), again.item_vectors())
    np.testing.assert_array_equal(first.user_vectors(), again.user_vectors())
    assert not np.array_equal(first.item_vectors(), other.item_vectors())


def test_fit_reports_each_epoch(synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame]) -> None:
    reported: list[tuple[int, int]] = []
    _small_model(epochs=2).fit(synthetic[0], lambda done, total: reported.append((done, total)))
    assert reported == [(1, 2), (2, 2)]


def test_save_load_round_trip(model: TwoTowerRecommender, tmp_path: Path) -> None:
    path = tmp_path / "two_tower.npz"
    model.save(path)
    loaded = TwoTowerRecommender.load(path)
    np.testing.assert_array_equal(loaded.user_vectors(), model.user_vectors())
    np.testing.assert_array_equal(loaded.item_vectors(), model.item_vectors())
    assert loaded.params() == model.params()
    history = np.array([0, 5, 30])
    np.testing.assert_array_equal(
        loaded.embed_history(history, {"age": 30}), model.embed_history(history, {"age": 30})
    )


def test_brand_new_item_takes_the_cold_path(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame], model: TwoTowerRecommender
) -> None:
    data, _, items = synthetic
    cold = items[items["item_id"] == "cold4"]
    brand_new = cold.assign(item_id="never-seen-before")
    np.testing.assert_allclose(
        model.embed_items(brand_new)[0],
        model.item_vectors()[data.items.index("cold4")],
        rtol=1e-6,
        atol=1e-6,
    )
    # A warm item embedded from its metadata keeps its learnt id embedding.
    warm = items[items["item_id"] == "i3_0"]
    np.testing.assert_allclose(
        model.embed_items(warm)[0], model.item_vectors()[data.items.index("i3_0")], atol=1e-6
    )


def test_embed_history_matches_served_user_vector(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame], model: TwoTowerRecommender
) -> None:
    data, _, _ = synthetic
    user = 11
    history = data.interactions.loc[data.interactions["user_idx"] == user, "item_idx"]
    assert data.user_features is not None
    features = data.user_features.iloc[user].to_dict()
    np.testing.assert_allclose(
        model.embed_history(history.to_numpy(), features),
        model.user_vectors()[user],
        atol=1e-6,
    )


def test_fits_without_user_features(
    synthetic: tuple[TrainData, pd.DataFrame, pd.DataFrame],
) -> None:
    data = synthetic[0]
    bare = TrainData(**{**data.__dict__, "user_features": None})
    model = _small_model(epochs=1).fit(bare)
    assert np.isfinite(model.user_vectors()).all()
    assert model.embed_history(np.array([], dtype=np.int64)).shape == (32,)
