"""core.drift: bins, PSI, the sliding window, user activity and the baseline's format."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from batch.drift_baseline import training_baseline
from core import drift

pytestmark = pytest.mark.unit


def test_psi_matches_a_hand_computed_case() -> None:
    # (0.5-0.25)ln(0.5/0.25) + (0.3-0.25)ln(0.3/0.25) + (0.2-0.5)ln(0.2/0.5)
    expected = 0.25 * math.log(2) + 0.05 * math.log(1.2) + 0.3 * math.log(2.5)
    assert drift.psi([0.25, 0.25, 0.5], [50, 30, 20]) == pytest.approx(expected)


def test_psi_is_zero_when_live_equals_the_baseline() -> None:
    assert drift.psi([0.1, 0.2, 0.7], [10, 20, 70]) == pytest.approx(0.0)


def test_an_empty_bin_gives_a_finite_psi() -> None:
    value = drift.psi([0.5, 0.5, 0.0], [0, 90, 10])
    assert math.isfinite(value)
    assert value > 1


def test_quantile_bins_give_each_bin_a_fair_share() -> None:
    values = np.random.default_rng(0).lognormal(size=10_000)
    bins = drift.Bins.quantiles(values, 10)
    shares = drift.Distribution.of_values(bins, values).shares
    assert len(bins) == 10
    assert all(0.09 < share < 0.11 for share in shares)
    assert bins.index(-1.0) == 0
    assert bins.index(1e9) == 9


def test_ties_merge_quantile_bins() -> None:
    values = np.array([1.0] * 60 + list(range(2, 42)))
    bins = drift.Bins.quantiles(values, 10)
    assert len(bins) < 10
    assert drift.Distribution.of_values(bins, values).shares[bins.index(1.0) or 0] >= 0.6


def baseline_of(values: np.ndarray) -> drift.Distribution:
    return drift.Distribution.of_values(drift.Bins.quantiles(values, 10), values)


def test_psi_rises_with_a_shifted_input_and_stays_flat_for_the_same_distribution() -> None:
    rng = np.random.default_rng(1)
    base = baseline_of(rng.normal(size=20_000))
    same = drift.psi(base.shares, base.bins.counts(rng.normal(size=2_000)))
    shifted = drift.psi(base.shares, base.bins.counts(rng.normal(0.5, 1.0, size=2_000)))
    assert same < 0.02
    assert shifted > 0.2
    much = drift.psi(base.shares, base.bins.counts(rng.normal(1.5, 1.0, size=2_000)))
    assert much > shifted


def test_categorical_bins_leave_unknown_values_out() -> None:
    bins = drift.Bins.categorical(["view", "click", "purchase"])
    assert bins.counts(["view", "view", "hide", "purchase"]).tolist() == [2, 0, 1]
    assert bins.index("hide") is None


def test_the_sliding_window_forgets_old_buckets() -> None:
    window = drift.SlidingWindow({"x": 2}, bucket_s=60, buckets=3)
    window.add("x", 0, now=0)
    window.add("x", 1, now=61)
    window.add("x", 1, now=125)
    assert window.totals(now=130) == {"x": [1.0, 2.0]}
    assert window.totals(now=180) == {"x": [0.0, 2.0]}  # the first bucket left the window
    window.add("x", 0, now=185)  # reuses the first bucket's slot
    assert window.totals(now=185) == {"x": [1.0, 2.0]}
    window.add("x", 0, now=10)  # older than the ring: dropped
    assert window.totals(now=185) == {"x": [1.0, 2.0]}
    assert window.totals(now=250) == {"x": [1.0, 1.0]}  # the bucket of 61 s left too
    assert window.totals(now=1000) == {"x": [0.0, 0.0]}


def test_user_activity_is_handed_over_when_the_period_closes() -> None:
    counter = drift.ActivityCounter(period_s=300)
    assert counter.observe("a", 10) is None
    assert counter.observe("a", 20) is None
    assert counter.observe("b", 30) is None
    closed = counter.observe("a", 301)
    assert closed is not None
    assert closed[0] == 0
    assert sorted(closed[1]) == [1, 2]
    assert counter.close(650) == (300, [1])


def test_user_activity_samples_users_past_its_bound() -> None:
    counter = drift.ActivityCounter(period_s=300, max_users=100)
    for user in range(1000):
        for _ in range(3):
            counter.observe(f"u{user}", 1)
    closed = counter.close(400)
    assert closed is not None
    assert 0 < len(closed[1]) <= 100
    assert set(closed[1]) == {3}  # whole users kept, each with all of their events


def test_the_baseline_round_trips_through_json_and_refuses_other_formats() -> None:
    baseline = drift.Baseline(
        {
            "event_types": drift.Distribution.of_values(
                drift.Bins.categorical(["view", "click"]), ["view", "click", "view"]
            ),
            "x": baseline_of(np.arange(100.0)),
        },
        ("view", "click"),
        300.0,
    )
    assert drift.Baseline.from_json(baseline.to_json()) == baseline
    with pytest.raises(ValueError, match="format"):
        drift.Baseline.from_json(b'{"format": 99}')


def test_live_entries_merge_by_version_and_age() -> None:
    baseline = drift.Baseline({"x": baseline_of(np.arange(100.0))}, ("view",), 300.0)
    size = len(baseline.distributions["x"].bins)
    one = drift.LiveEntry("v1", 100.0, 3600, {"x": [1.0] * size})
    other = drift.LiveEntry("v1", 90.0, 3600, {"x": [2.0] * size, "unknown": [1.0]})
    stale = drift.LiveEntry("v1", 0.0, 3600, {"x": [5.0] * size})
    old_version = drift.LiveEntry("v0", 100.0, 3600, {"x": [7.0] * size})
    entries = [drift.LiveEntry.from_json(e.to_json()) for e in (one, other, stale, old_version)]
    merged, used = drift.merge_live(entries, baseline, "v1", now=120, max_age_s=60)
    assert used == 2
    assert merged == {"x": [3.0] * size}


def test_the_report_gives_psi_only_past_the_minimum() -> None:
    baseline = drift.Baseline({"x": baseline_of(np.arange(100.0))}, ("view",), 300.0)
    size = len(baseline.distributions["x"].bins)
    (few,) = drift.report(baseline, {"x": [1.0] * size}, min_count=100)
    assert few.psi is None
    (enough,) = drift.report(baseline, {"x": [20.0] * size}, min_count=100)
    assert enough.psi == pytest.approx(0.0, abs=1e-9)
    (nothing,) = drift.report(baseline, {}, min_count=1)
    assert nothing.psi is None
    assert nothing.live_count == 0


def test_the_training_baseline_has_each_distribution() -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    n_users, n_items = 50, 30
    rows = pd.DataFrame(
        {
            "user_idx": rng.integers(0, n_users, 2000),
            "item_idx": rng.zipf(1.5, 2000) % n_items,
            "ts": np.sort(rng.integers(0, 86_400, 2000)),
            "event_type": rng.choice(["view", "click", "purchase"], 2000, p=[0.7, 0.2, 0.1]),
        }
    )
    popularity = np.bincount(rows["item_idx"], minlength=n_items)
    baseline = training_baseline(
        rows, popularity, rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))
    )
    assert set(baseline.distributions) == {
        drift.EVENT_TYPES,
        drift.ITEM_POPULARITY,
        drift.USER_ACTIVITY,
        drift.SERVED_SCORES,
        drift.EVENT_SCORES,
    }
    mix = baseline.distributions[drift.EVENT_TYPES].shares
    assert mix[0] == pytest.approx(0.7, abs=0.05)
    assert baseline.distributions[drift.SERVED_SCORES].count == 10 * n_users
    ratings = rows.assign(event_type="rating")
    no_types = training_baseline(ratings, popularity, np.ones((n_users, 2)), np.ones((n_items, 2)))
    assert drift.EVENT_TYPES not in no_types.distributions
    assert no_types.event_types == ("view", "click", "purchase")


def test_a_ranker_adds_one_distribution_per_feature() -> None:
    from batch.drift_baseline import with_ranker_features
    from core.ranking import FEATURES

    base = drift.Baseline({}, ("view",), 300.0)
    rows = np.random.default_rng(4).normal(size=(1000, len(FEATURES))).astype(np.float32)
    found = with_ranker_features(base, rows)
    assert set(found.distributions) == {drift.RANKER_FEATURE_PREFIX + f for f in FEATURES}
    assert drift.Baseline.from_json(found.to_json()) == found


def test_a_window_fed_numpy_counts_is_written_and_read_back() -> None:
    """The worker adds a histogram's numpy counts (user activity): its entry still serialises."""
    window = drift.SlidingWindow({"x": 3}, bucket_s=60.0, buckets=4)
    window.add_counts("x", list(np.array([1.0, 0.0, 2.0])), 10.0)
    entry = drift.LiveEntry("v1", 10.0, window.window_s, window.totals(10.0))
    assert drift.LiveEntry.from_json(entry.to_json()).counts == {"x": [1.0, 0.0, 2.0]}


def test_served_scores_read_users_at_unit_length_as_the_online_vector_is() -> None:
    from batch.drift_baseline import served_scores

    rng = np.random.default_rng(3)
    users, items = rng.standard_normal((20, 4)), rng.standard_normal((30, 4))
    scaled = served_scores(users * 10.0, items)
    np.testing.assert_allclose(scaled, served_scores(users, items), rtol=1e-5)
    unit = users[0] / np.linalg.norm(users[0])
    assert scaled.max() <= np.linalg.norm(items, axis=1).max() + 1e-5
    assert np.isclose(served_scores(users[:1], items).max(), (items @ unit).max(), rtol=1e-5)


def test_the_genre_mix_of_the_events_is_in_the_baseline_and_a_taste_shift_moves_it() -> None:
    import pandas as pd

    genres = [("Drama",), ("Comedy",), ("Drama", "Comedy"), ("Horror",)]
    rows = pd.DataFrame(
        {"user_idx": [0, 0, 1, 1], "item_idx": [0, 1, 2, 0], "ts": [0, 1, 2, 3],
         "event_type": ["view"] * 4}
    )  # fmt: skip
    popularity = np.bincount(rows["item_idx"], minlength=4)
    baseline = training_baseline(
        rows, popularity, np.ones((2, 2)), np.ones((4, 2)), item_genres=genres
    )
    mix = baseline.distributions[drift.ITEM_GENRES]
    assert mix.bins.categories == ("Comedy", "Drama", "Horror")
    assert list(mix.shares) == pytest.approx([2 / 5, 3 / 5, 0.0])
    same = drift.psi(mix.shares, mix.bins.counts(["Comedy", "Drama", "Drama", "Comedy", "Drama"]))
    shifted = drift.psi(mix.shares, mix.bins.counts(["Horror"] * 5))
    assert same < 0.1
    assert shifted > 0.25


def test_served_scores_follow_the_users_training_events_as_the_worker_would() -> None:
    """A user whose events all went to one item is served by a vector pulled towards it."""
    import pandas as pd

    from batch.drift_baseline import served_scores

    items = np.eye(4, dtype=np.float32)[:3] * 2.0  # three items along three axes
    users = np.array([[0.0, 0.0, 0.0, 1.0]], dtype=np.float32)  # likes none of them
    rows = pd.DataFrame(
        {"user_idx": [0] * 30, "item_idx": [2] * 30, "ts": range(30), "event_type": ["click"] * 30}
    )
    before = served_scores(users, items)
    after = served_scores(users, items, None, rows)
    assert before.max() == pytest.approx(0.0, abs=1e-6)
    assert after.max() > 1.9  # the online vector has turned to item 2 (norm 2)


def test_event_scores_replay_the_sampled_users_events_in_time_order() -> None:
    """Each event is scored against the vector held before it: a user who keeps to one item
    scores it higher each time, as the online vector turns towards it."""
    import pandas as pd

    from batch.drift_baseline import event_scores

    items = np.eye(3, dtype=np.float32) * 2.0
    users = np.array([[1.0, 1.0, 0.0]], dtype=np.float32)
    rows = pd.DataFrame(
        {"user_idx": [0] * 4, "item_idx": [1] * 4, "ts": [3, 1, 2, 0], "event_type": ["view"] * 4}
    )
    scores = event_scores(users, items, rows)
    assert len(scores) == 4
    assert scores[0] == pytest.approx(1.0 / np.sqrt(2.0), rel=1e-5)  # cosine, batch vector
    assert all(a < b for a, b in pairwise(scores))
    assert len(event_scores(users, items, rows.iloc[:0])) == 0


def scores_baseline() -> drift.Baseline:
    values = np.random.default_rng(6).normal(size=5000)
    return drift.Baseline({drift.EVENT_SCORES: baseline_of(values)}, ("view",), 300.0)


def test_score_distributions_wait_for_their_live_reference_and_then_compare_with_it() -> None:
    baseline = scores_baseline()
    bins = baseline.distributions[drift.EVENT_SCORES].bins
    rng = np.random.default_rng(7)
    # Live scores sit above the training ones (in-sample): no reference yet, no PSI.
    settled = {drift.EVENT_SCORES: list(bins.counts(rng.normal(0.8, 1.0, 3000)))}
    (waiting,) = drift.report(baseline, settled, min_count=100)
    assert waiting.against == "awaiting_reference"
    assert waiting.psi is None

    reference = drift.Reference.capture(settled, min_count=100, now=50.0)
    assert reference is not None
    assert drift.Reference.from_json(reference.to_json()) == reference
    same = {drift.EVENT_SCORES: list(bins.counts(rng.normal(0.8, 1.0, 3000)))}
    (flat,) = drift.report(baseline, same, min_count=100, reference=reference)
    assert flat.against == "live_reference"
    assert flat.psi is not None
    assert flat.psi < 0.05  # against training it would read as drift
    assert (
        drift.psi(baseline.distributions[drift.EVENT_SCORES].shares, same[drift.EVENT_SCORES]) > 0.2
    )
    shifted = {drift.EVENT_SCORES: list(bins.counts(rng.normal(-0.5, 1.0, 3000)))}
    (moved,) = drift.report(baseline, shifted, min_count=100, reference=reference)
    assert moved.psi is not None
    assert moved.psi > 0.5


def test_a_reference_needs_enough_observations_and_a_settled_window() -> None:
    assert drift.Reference.capture({drift.EVENT_SCORES: [1.0] * 10}, 100, 0.0) is None
    # Only the score distributions are referenced live.
    assert drift.Reference.capture({drift.ITEM_GENRES: [500.0, 500.0]}, 100, 0.0) is None
    assert not drift.reference_due(active_since=1000.0, now=1500.0, settle_s=300, window_s=300)
    assert drift.reference_due(active_since=1000.0, now=1600.0, settle_s=300, window_s=300)
