"""The synthetic generator: determinism, sizes, funnel, popularity, taste clusters and drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.data import Dataset, DatasetError
from batch.datasets import load_dataset
from batch.datasets.synthetic import (
    GENRES,
    SyntheticConfig,
    cluster_tastes,
    generate_synthetic,
)

pytestmark = pytest.mark.unit

CONFIG = SyntheticConfig(n_users=1_500, n_items=1_000, n_events=60_000, seed=11)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate_synthetic(CONFIG)


@pytest.fixture(scope="module")
def events(dataset: Dataset) -> pd.DataFrame:
    return dataset.interactions


def test_same_seed_same_data_other_seed_other_data() -> None:
    small = SyntheticConfig(n_users=200, n_items=80, n_events=3_000, seed=5)
    first, again = generate_synthetic(small), generate_synthetic(small)
    pd.testing.assert_frame_equal(first.interactions, again.interactions)
    pd.testing.assert_frame_equal(first.items, again.items)
    pd.testing.assert_frame_equal(first.users, again.users)
    other = generate_synthetic(SyntheticConfig(n_users=200, n_items=80, n_events=3_000, seed=6))
    assert not first.interactions["item_id"].equals(other.interactions["item_id"])


def test_sizes_ids_and_time_order(events: pd.DataFrame) -> None:
    data = generate_synthetic(SyntheticConfig(n_users=300, n_items=40, n_events=5_001, seed=1))
    assert data.n_interactions == 5_001  # exact, even when the cut falls inside a funnel
    assert len(data.items) == 40
    assert data.users is not None
    assert len(data.users) == 300
    assert data.items["title"].iloc[6] == "Item 7"
    assert data.items["item_id"].iloc[6] == "i7"
    assert data.items["year"].between(CONFIG.first_year, CONFIG.last_year).all()
    assert data.items["genres"].map(len).between(1, 3).all()
    assert set(data.items["genres"].explode()) <= set(GENRES)
    ts = events["ts"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert ts.min() >= CONFIG.start_ts
    assert ts.max() < CONFIG.start_ts + CONFIG.span_days * 86_400
    assert events["user_id"].str.match(r"^u\d+$").all()
    assert set(events["item_id"]) <= {f"i{k}" for k in range(1, CONFIG.n_items + 1)}


def test_funnel_views_then_clicks_then_purchases(events: pd.DataFrame) -> None:
    share = events["event_type"].value_counts(normalize=True)
    assert share["view"] > 0.7
    assert 0.05 < share["click"] < 0.2
    assert 0 < share["purchase"] < 0.05
    assert set(events["weight"]) == {1.0, 2.0, 4.0}
    # every purchase has an earlier click, and every click an earlier view, of the same item
    # by the same user in the same session
    keys = ["user_id", "item_id", "session_id"]
    for later, earlier in (("purchase", "click"), ("click", "view")):
        first_earlier = events[events["event_type"] == earlier].groupby(keys)["ts"].min()
        steps = events[events["event_type"] == later].join(first_earlier.rename("before"), on=keys)
        assert steps["before"].notna().all()
        assert (steps["before"] < steps["ts"]).all()


def test_popularity_is_heavy_tailed(events: pd.DataFrame) -> None:
    counts = events["item_id"].value_counts()
    top_share = counts.iloc[: CONFIG.n_items // 100].sum() / len(events)
    assert top_share > 0.2  # uniform popularity would give 0.01
    assert counts.iloc[0] > 20 * counts.median()


def test_clusters_prefer_their_genres_and_drift(dataset: Dataset, events: pd.DataFrame) -> None:
    assert dataset.users is not None
    tastes = cluster_tastes(CONFIG)
    genres = dataset.items.set_index("item_id")["genres"]
    views = events[events["event_type"] == "view"].join(
        dataset.users.set_index("user_id"), on="user_id"
    )
    views = views.assign(genres=views["item_id"].map(genres).to_numpy())
    span = CONFIG.span_days * 86_400
    early = views[views["ts"] < CONFIG.start_ts + span * 0.2]
    late = views[views["ts"] >= CONFIG.start_ts + span * 0.8]

    def share(frame: pd.DataFrame, wanted: set[str]) -> float:
        return float(frame["genres"].map(lambda g: bool(wanted & set(g))).mean())

    towards, away = [], []
    for row in tastes.itertuples():
        start, end = set(row.start_genres), set(row.end_genres)
        own = early[early["cluster"] == row.cluster]
        others = early[early["cluster"] != row.cluster]
        # a cluster's views hit its preferred genres far more than other clusters' views do
        assert share(own, start) > share(others, start) + 0.25
        own_late = late[late["cluster"] == row.cluster]
        towards.append(share(own_late, end - start) - share(own, end - start))
        away.append(share(own_late, start - end) - share(own, start - end))
    # Drift: on average over clusters, the genre taken up gains share and the one given up
    # loses it (without drift both changes are about 0.00 +- 0.01 at this size).
    assert np.mean(towards) > 0.08
    assert np.mean(away) < -0.08


def test_sessions_are_short_runs_of_one_user(events: pd.DataFrame) -> None:
    per_session = events.groupby("session_id").agg(
        users=("user_id", "nunique"), span=("ts", np.ptp)
    )
    assert (per_session["users"] == 1).all()
    assert per_session["span"].median() < 3_600
    assert events["session_id"].nunique() < len(events) / 3


def test_spec_strings() -> None:
    config = SyntheticConfig.from_spec("users=10, items=5,events=1_000,seed=9,drift=0.5")
    assert (config.n_users, config.n_items, config.n_events, config.seed, config.drift) == (
        10,
        5,
        1000,
        9,
        0.5,
    )
    assert load_dataset("synthetic:users=30,items=10,events=200", ".").n_interactions == 200
    default = load_dataset("synthetic", ".")
    assert default.n_interactions == 50_000
    assert len(default.items) == 500
    with pytest.raises(DatasetError, match="cannot read 'colour=red'"):
        SyntheticConfig.from_spec("colour=red")
    with pytest.raises(DatasetError, match="users must be a number"):
        SyntheticConfig.from_spec("users=many")
    with pytest.raises(DatasetError, match="n_items must be at least 1"):
        SyntheticConfig.from_spec("items=0")
