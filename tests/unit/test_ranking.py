"""The ranking stage's shared rules (`core.ranking`): the pool of candidate sources, the
item-to-item scores, the features, the ranker's model text."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import pytest

from batch.ranking.train import RANKER_PARAMS, TrainingRows, fit_ranker
from core.attribution import item_tag
from core.ranking import (
    FEATURE_VERSION,
    FEATURES,
    SOURCES,
    ItemSignals,
    Ranker,
    RankerMismatchError,
    SourceList,
    ann_list,
    best_first,
    feature_matrix,
    follow,
    gather,
    genre_popular,
    merge_epochs,
    popular_by_genre,
    ranked_order,
    recent_items,
    stream_user,
    user_signals,
)
from core.rules import WindowCounts

pytestmark = pytest.mark.unit


def column(feature: str) -> int:
    return FEATURES.index(feature)


def test_each_source_keeps_its_quota_of_allowed_items_and_no_item_comes_twice() -> None:
    lists = [
        SourceList("ann", ["a", "b", "c", "d"], [0.8, 0.4, 0.2, 0.1]),
        SourceList("trending", ["c", "e", "f"], [10.0, 5.0, 1.0]),
        SourceList("popular", ["b", "g"], [100.0, 50.0]),
    ]
    pool = gather(
        lists, {"ann": 2, "trending": 2, "popular": 5}, allowed={"a", "c", "d", "e", "f", "g"}
    )
    # ann: "b" is filtered out before its quota counts, so a and c; trending: c again, then e.
    assert pool.item_ids == ["a", "c", "e", "g"]
    assert pool.first_source == ["ann", "ann", "trending", "popular"]
    ann, trending, popular = (SOURCES.index(s) for s in ("ann", "trending", "popular"))
    c = pool.item_ids.index("c")
    assert (pool.ranks[c, ann], pool.ranks[c, trending]) == (2, 1)
    assert pool.scores[c, ann] == pytest.approx(0.2 / 0.8)
    assert pool.scores[c, trending] == 1.0
    e = pool.item_ids.index("e")
    assert pool.ranks[e, ann] == 3  # absent: quota + 1
    assert pool.scores[e, ann] == 0.0
    assert pool.ranks[pool.item_ids.index("g"), popular] == 1  # "b" was not allowed


def test_a_source_off_or_empty_gives_nothing() -> None:
    lists = [SourceList("ann", ["a"], [1.0]), SourceList("neighbours", [], [])]
    pool = gather(lists, {"ann": 0, "neighbours": 5})
    assert len(pool) == 0


def test_ties_rank_as_redis_ranks_them_and_epochs_merge_with_the_old_one_faint() -> None:
    assert best_first([("a", 1.0), ("c", 1.0), ("b", 2.0)], 3) == [
        ("b", 2.0),
        ("c", 1.0),
        ("a", 1.0),
    ]
    merged = merge_epochs([("x", 1.0)], [("y", 2.0**16 * 3), ("x", 2.0**16)], 5)
    assert merged == [("y", 3.0), ("x", 2.0)]


def test_follow_weighs_the_newest_items_most() -> None:
    newest = [("n1", 1.0), ("shared", 1.0)]
    older = [("o1", 1.5), ("shared", 1.0)]
    oldest = [("z", 3.0)]
    scores = dict(follow([newest, older, oldest], 10))
    assert scores == {"n1": 1.0, "shared": 1.5, "o1": 0.75, "z": 0.75}


def test_recent_items_are_distinct_items_of_interest_newest_first() -> None:
    history = [
        ("a", "view"),
        ("b", "dislike"),
        ("a", "click"),
        ("c", "purchase"),
        ("d", "view"),
        ("e", "view"),
    ]
    assert recent_items(history, 3) == ["a", "c", "d"]
    assert recent_items(history) == ["a", "c", "d", "e"]


def test_ann_scores_are_rounded_before_they_rank() -> None:
    found = ann_list(["a", "b"], [0.1234561, 0.1234564])
    assert found.item_ids == ["b", "a"]  # equal once rounded: ties by the higher id
    assert found.scores == [0.12346, 0.12346]


def _items(units: np.ndarray, popularity: np.ndarray, **stream: Any) -> ItemSignals:
    n = len(units)
    return ItemSignals(
        unit_vectors=units,
        popularity=popularity,
        genres=stream.get("genres", [()] * n),
        first_seen_s=stream.get("first_seen_s", np.full(n, np.nan)),
        trending=stream.get("trending", np.zeros(n)),
        window_1h=stream.get("window_1h", np.zeros(n)),
    )


def test_features_of_a_hand_built_request() -> None:
    pool = gather(
        [SourceList("ann", ["a", "b"], [2.0, 1.0]), SourceList("neighbours", ["b"], [0.5])],
        {"ann": 10, "neighbours": 10},
    )
    # The model's items at unit length: a, b, and the user's recent items r1 (newest), r2.
    units = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    rows = {"a": 0, "b": 1, "r1": 2, "r2": 3}
    user = user_signals(np.array([3.0, 4.0]), ["r1", "gone", "r2"], rows, units, 7)
    features = feature_matrix(pool, _items(units[:2], np.array([9.0, 0.0])), user, 0.0)
    assert features.shape == (2, len(FEATURES))
    a, b = features
    assert (a[column("ann_score")], a[column("ann_rank")]) == (1.0, 1.0)
    assert (b[column("ann_score")], b[column("ann_rank")]) == (0.5, 2.0)
    assert (a[column("neighbours_score")], a[column("neighbours_rank")]) == (0.0, 11.0)
    assert (b[column("neighbours_score")], b[column("neighbours_rank")]) == (1.0, 1.0)
    assert a[column("user_similarity")] == pytest.approx(0.6)
    assert (a[column("last_item_similarity")], b[column("last_item_similarity")]) == (0.0, 1.0)
    # mean of r1 and r2: (0.3, 0.9) -> unit (0.316, 0.949); "gone" is not in the model
    assert a[column("recent_mean_similarity")] == pytest.approx(0.3 / np.hypot(0.3, 0.9))
    assert b[column("recent_max_similarity")] == pytest.approx(1.0)
    assert a[column("recent_max_similarity")] == pytest.approx(0.6)
    assert a[column("item_popularity")] == pytest.approx(np.log(10.0))
    assert b[column("item_popularity")] == 0.0
    assert (a[column("user_history")], b[column("user_history")]) == (7.0, 7.0)
    unknown_newest = user_signals(None, ["gone", "r1"], rows, units, 2)
    cold = feature_matrix(pool, _items(units[:2], np.zeros(2)), unknown_newest, 0.0)
    assert not cold[:, column("user_similarity")].any()
    assert not cold[:, column("last_item_similarity")].any()  # the newest is not in the model
    assert cold[1, column("recent_max_similarity")] == pytest.approx(1.0)


def test_stream_features_of_a_hand_built_state() -> None:
    pool = gather([SourceList("ann", ["a", "b", "c"], [3.0, 2.0, 1.0])], {"ann": 10})
    now = 7_200.0 + 1_000  # inside the hour window from 7,200 and the 5-minute one from 8,100
    windows = {
        "5m": WindowCounts(8_100, {"view": 2, "dislike": 1}),
        "5m_prev": WindowCounts(7_800, {"view": 5}),
        "1h": WindowCounts(3_600, {"purchase": 4}),  # an hour ago: not the current window
    }
    stream = stream_user(
        {"Drama": 3.0, "Comedy": 1.0},
        windows,
        [8_150.0, 8_090.0],
        {item_tag("b"): 2},
        now,
    )
    assert (stream.window_5m, stream.window_1h, stream.gap_s) == (2, 0, 60.0)
    units = np.eye(3, 2, dtype=np.float32)
    items = _items(
        units,
        np.ones(3),
        genres=[("Drama", "Comedy"), ("Comedy",), ("Horror",)],
        first_seen_s=np.array([now - 86_400, now + 50.0, np.nan]),  # a day old, future, unknown
        trending=np.array([4.0, 1.0, 0.0]),
        window_1h=np.array([0.0, 3.0, 0.0]),
    )
    user = user_signals(None, [], {}, units, 2, stream)
    a, b, c = feature_matrix(pool, items, user, now)
    assert [a[column("genre_affinity")], b[column("genre_affinity")]] == [1.0, 0.25]
    assert c[column("genre_affinity")] == 0.0
    assert [a[column("item_trending")], b[column("item_trending")]] == [1.0, 0.25]
    assert b[column("item_window_1h")] == pytest.approx(np.log(4.0))
    assert a[column("item_age_days")] == pytest.approx(np.log(2.0))
    assert (b[column("item_age_days")], c[column("item_age_days")]) == (0.0, 0.0)
    assert (a[column("user_window_5m")], a[column("user_window_1h")]) == (2.0, 0.0)
    assert a[column("user_gap")] == pytest.approx(np.log(61.0))
    assert (a[column("item_impressions")], b[column("item_impressions")]) == (0.0, 2.0)


def test_genre_popular_follows_the_strongest_genres() -> None:
    genres = [("Drama",), ("Drama", "Comedy"), ("Comedy",), ("Horror",), ("Drama",)]
    popularity = np.array([10.0, 4.0, 8.0, 50.0, 0.0])
    by_genre = popular_by_genre(genres, popularity, ["d", "dc", "c", "h", "never"], 10)
    assert by_genre["Drama"] == [("d", 10.0), ("dc", 4.0)]  # an item nobody took is left out
    affinity = {"Drama": 3.0, "Comedy": 1.0, "Horror": 0.0}
    found = genre_popular(affinity, by_genre, 10)
    # d: 10 * 3/4; c: 8 * 1/4; dc counts in both genres: 4 * 3/4 + 4 * 1/4
    assert found == [("d", 7.5), ("dc", 4.0), ("c", 2.0)]
    assert genre_popular(affinity, by_genre, 1) == [("d", 7.5)]
    assert genre_popular({}, by_genre, 10) == []


def small_ranker_text() -> str:
    """A ranker that learns that a high ann_score is what users take."""
    rng = np.random.default_rng(3)
    features = rng.random((600, len(FEATURES))).astype(np.float32)
    groups = np.full(60, 10)
    labels = np.zeros(600, dtype=np.int32)
    for group in range(60):
        rows = features[group * 10 : (group + 1) * 10, column("ann_score")]
        labels[group * 10 + int(np.argmax(rows))] = 1
    rows_ = TrainingRows(features, labels, groups, 60, 60)
    return fit_ranker(
        rows_, RANKER_PARAMS | {"n_estimators": 20, "min_data_in_leaf": 5, "negative_rate": 1.0}
    )


def test_a_ranker_scores_by_what_it_learned_and_names_its_strongest_features() -> None:
    ranker = Ranker(small_ranker_text(), FEATURE_VERSION)
    features = np.full((2, len(FEATURES)), 0.5, dtype=np.float32)
    features[0, column("ann_score")] = 0.95
    features[1, column("ann_score")] = 0.05
    scores = ranker.score(features)
    assert scores[0] > scores[1]
    assert ranker.strongest(features[:1])[0][0][0] == "ann_score"


def test_the_compiled_ranker_scores_as_lightgbm_does_missing_values_included() -> None:
    ranker = Ranker(small_ranker_text(), FEATURE_VERSION)
    assert ranker._compiled is not None  # lleaves compiled it: what the API serves with
    rng = np.random.default_rng(3)
    features = rng.random((300, len(FEATURES)))
    features[rng.random(features.shape) < 0.1] = np.nan  # an item never seen: no age
    expected = np.asarray(ranker.booster.predict(features, num_threads=1))
    np.testing.assert_allclose(ranker.score(features), expected, rtol=0, atol=1e-12)
    assert np.array_equal(ranked_order(ranker.score(features)), ranked_order(expected))


def test_a_ranker_that_cannot_be_compiled_is_scored_by_lightgbm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lleaves

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no LLVM here")

    monkeypatch.setattr(lleaves.Model, "compile", refuse)
    ranker = Ranker(small_ranker_text(), FEATURE_VERSION)
    assert ranker._compiled is None
    features = np.random.default_rng(4).random((5, len(FEATURES)))
    np.testing.assert_array_equal(
        ranker.score(features), ranker.booster.predict(features, num_threads=1)
    )


def test_a_ranker_of_another_feature_list_is_refused() -> None:
    text = small_ranker_text()
    with pytest.raises(RankerMismatchError, match="retrain"):
        Ranker(text, FEATURE_VERSION - 1)
    renamed = text.replace("feature_names=ann_score", "feature_names=other_score")
    with pytest.raises(RankerMismatchError):
        Ranker(renamed, FEATURE_VERSION)


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_alone_gives_its_allowed_items_in_its_order(source: str) -> None:
    found = SourceList(source, ["x", "seen", "y", "z"], [4.0, 3.0, 2.0, 1.0])
    pool = gather([found], {source: 2}, allowed={"x", "y", "z"})
    assert pool.item_ids == ["x", "y"]
    assert pool.first_source == [source, source]
    column = SOURCES.index(source)
    assert pool.ranks[:, column].tolist() == [1.0, 2.0]
    assert pool.scores[:, column].tolist() == [1.0, 0.5]
    others = [c for c in range(len(SOURCES)) if c != column]
    assert not pool.scores[:, others].any()


def test_every_source_can_be_named_in_an_answer() -> None:
    from api.models import ItemSource

    assert set(SOURCES) <= set(get_args(ItemSource))
