"""The stream worker's pure update rules."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from core.rules import (
    WindowCounts,
    add_to_windows,
    counts_as_interest,
    decay_affinity,
    ema_steps,
    ema_update,
    fold_in,
    gram_matrix,
    normalize,
    transitions,
    trending_increment,
    window_start,
)
from core.user_state import History, HistoryEntry, RecentIds, UserState
from schemas.events import EVENT_TYPES

pytestmark = pytest.mark.unit


def test_ema_moves_towards_the_item_and_stays_unit_length() -> None:
    user = np.array([1.0, 0.0], dtype=np.float32)
    item = np.array([0.0, 2.0], dtype=np.float32)
    small = ema_update(user, item, 0.1)
    large = ema_update(user, item, 0.5)
    assert np.linalg.norm(small) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(large, np.array([0.5, 1.0]) / np.linalg.norm([0.5, 1.0]), rtol=1e-6)
    assert 0 < small[1] < large[1]  # a heavier event type pulls harder


def test_ema_steps_for_many_users_equal_single_steps_in_order() -> None:
    rng = np.random.default_rng(3)
    items = rng.standard_normal((20, 8)).astype(np.float32)
    moved = normalize(rng.standard_normal(8))
    users: list[np.ndarray | None] = [None, moved, None]
    users += [normalize(rng.standard_normal(8)) for _ in range(5)]
    steps = [
        [(items[rng.integers(20)], float(rng.choice([0.1, 0.3, 0.9]))) for _ in range(length)]
        for length in [1, 3, 0, 2, 1, 4, 1, 2]
    ]

    together = ema_steps(users, steps)

    for user, user_steps, result in zip(users, steps, together, strict=True):
        expected = user
        for item, weight in user_steps:
            expected = ema_update(expected, item, weight)
        if expected is None:
            assert result is None  # no step: no vector yet
        else:
            assert result is not None
            np.testing.assert_array_equal(result, expected)  # bit for bit
    assert together[1] is not None
    assert not np.allclose(together[1], moved)  # they did move


def test_ema_starts_a_new_user_from_the_item_direction() -> None:
    np.testing.assert_allclose(ema_update(None, np.array([3.0, 4.0]), 0.2), [0.6, 0.8], rtol=1e-6)


def test_fold_in_with_gram_matches_the_full_weighted_least_squares() -> None:
    # Without the Y^T Y shortcut: every item weighs c_i (observed) or 1 (not observed), with
    # preference 1 for observed items; the minimiser of that objective is what fold_in returns.
    rng = np.random.default_rng(3)
    factors = rng.standard_normal((30, 6)).astype(np.float32)
    rows = np.array([2, 7, 11])
    confidence = np.array([4.0, 10.0, 2.0])
    weights = np.ones(30)
    weights[rows] = confidence
    preference = np.zeros(30)
    preference[rows] = 1.0
    y = factors.astype(np.float64)
    expected = np.linalg.solve(
        y.T @ (weights[:, None] * y) + 0.1 * np.eye(6), y.T @ (weights * preference)
    )
    got = fold_in(gram_matrix(factors), factors[rows], confidence, 0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_fold_in_prior_pulls_towards_the_batch_vector() -> None:
    rng = np.random.default_rng(4)
    factors = rng.standard_normal((30, 4))
    gram = factors.T @ factors
    prior = np.array([5.0, -5.0, 0.0, 1.0])
    free = fold_in(gram, factors[[1, 2]], np.array([5.0, 5.0]), 0.1)
    pulled = fold_in(gram, factors[[1, 2]], np.array([5.0, 5.0]), 0.1, prior, 1e5)
    assert np.linalg.norm(pulled - prior) < np.linalg.norm(free - prior)
    np.testing.assert_allclose(pulled, prior, atol=0.05)


def test_tumbling_windows_roll_and_count_late_events_in_the_previous_window() -> None:
    assert window_start(1_000_123, 300) == 1_000_123 - 1_000_123 % 300
    current, previous, ok = add_to_windows(None, None, 600, "view", 300)
    assert ok
    assert current == WindowCounts(600, {"view": 1})
    assert previous is None
    current, previous, ok = add_to_windows(current, previous, 910, "click", 300)
    assert (current, previous) == (WindowCounts(900, {"click": 1}), WindowCounts(600, {"view": 1}))
    current, previous, ok = add_to_windows(current, previous, 650, "view", 300)  # late, prev window
    assert ok
    assert previous == WindowCounts(600, {"view": 2})
    _, _, ok = add_to_windows(current, previous, 10, "view", 300)  # far too late
    assert not ok
    current, previous, _ = add_to_windows(current, previous, 5000, "view", 300)  # a gap
    assert previous is None
    assert current == WindowCounts(4800, {"view": 1})


def test_trending_increments_double_per_half_life_within_an_epoch() -> None:
    epoch, early = trending_increment(16 * 100 * 7 + 10, 1.0, 100)
    same_epoch, later = trending_increment(16 * 100 * 7 + 110, 1.0, 100)
    assert epoch == same_epoch == 7
    assert later / early == pytest.approx(2.0)
    next_epoch, _ = trending_increment(16 * 100 * 8, 1.0, 100)
    assert next_epoch == 8


def test_genre_affinity_decays_by_half_lives() -> None:
    decayed = decay_affinity({"Drama": 8.0, "Noir": 0.001}, elapsed_s=200, half_life_s=100)
    assert decayed == {"Drama": pytest.approx(2.0)}


def test_history_keeps_the_newest_entries_and_item_ids_with_separators() -> None:
    recent = History().push([HistoryEntry(3, "view", "a|b"), HistoryEntry(2, "click", "c")], 3)
    recent = recent.push([HistoryEntry(5, "purchase", "d"), HistoryEntry(4, "view", "e")], 3)
    assert recent.entries() == [
        HistoryEntry(5, "purchase", "d"),
        HistoryEntry(4, "view", "e"),
        HistoryEntry(3, "view", "a|b"),
    ]
    assert len(recent) == 3
    assert UserState(recent=recent).history_item_ids == {"d", "e", "a|b"}
    assert UserState().history_item_ids == set()


def test_history_keeps_millisecond_times_past_2106() -> None:
    late = 2**40 + 123  # beyond 32 bits of ms, as every time since 1970 is
    assert History().push([HistoryEntry(late, "click", "x")], 5).entries()[0].ts_ms == late


def test_recent_ids_keep_a_time_window_and_a_limit() -> None:
    ids = [uuid.uuid4().bytes for _ in range(5)]
    recent = RecentIds().push([(ids[1], 100), (ids[0], 10)], window_s=3600, limit=10)
    assert recent.prefixes() == {RecentIds.prefix(ids[0]), RecentIds.prefix(ids[1])}
    recent = recent.push([(ids[2], 5000)], window_s=3600, limit=10)  # 10 and 100 fall out
    assert recent.prefixes() == {RecentIds.prefix(ids[2])}
    recent = recent.push([(ids[4], 5002), (ids[3], 5001)], window_s=3600, limit=2)
    assert recent.records() == [(RecentIds.prefix(ids[4]), 5002), (RecentIds.prefix(ids[3]), 5001)]
    # Out of order: the window is measured from the newest record wherever it is.
    recent = RecentIds().push([(ids[0], 10), (ids[1], 9000), (ids[2], 7000)], 3600, limit=10)
    assert [ts for _, ts in recent.records()] == [9000, 7000]


def test_a_negative_step_moves_away_from_the_item_and_leaves_no_vector_alone() -> None:
    rng = np.random.default_rng(3)
    user = normalize(rng.standard_normal(8).astype(np.float32))
    item = normalize(rng.standard_normal(8).astype(np.float32))
    (away,) = ema_steps([user], [[(item, -0.2)]])
    assert away is not None
    np.testing.assert_allclose(away, normalize(0.8 * user - 0.2 * item), rtol=1e-6)
    assert float(away @ item) < float(user @ item)
    assert abs(float(np.linalg.norm(away)) - 1.0) < 1e-6
    # Nothing to move away from: a cold user stays cold, then starts at their first positive item.
    assert ema_steps([None], [[(item, -0.2)]]) == [None]
    (started,) = ema_steps([None], [[(item, -0.2), (user, 0.3)]])
    assert started is not None
    np.testing.assert_allclose(started, user, rtol=1e-6)


def test_only_positive_events_count_as_interest() -> None:
    assert [counts_as_interest(t) for t in EVENT_TYPES] == [True, True, True, False, False]


def test_transitions_step_between_items_of_interest_in_order() -> None:
    steps = [
        ("a", "view", 1.0),
        ("a", "click", 2.0),  # the same item: no step
        ("b", "dislike", 3.0),  # negative feedback: neither a step nor a break
        ("c", "purchase", 4.0),
        ("d", "view", 5.0),
    ]
    found = transitions("z", steps)
    assert [(t.source, t.target, t.index) for t in found] == [
        ("z", "a", 0),
        ("a", "c", 3),
        ("c", "d", 4),
    ]
    assert [t.weight for t in found] == [1.0, 4.0, 1.0]
    assert [(t.source, t.target) for t in transitions(None, steps[:2])] == []


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_ema_steps_score_each_positive_step_against_the_vector_held_before_it() -> None:
    rng = np.random.default_rng(5)
    items = rng.standard_normal((6, 4)).astype(np.float32)
    start = normalize(rng.standard_normal(4))
    steps = [(items[0], 0.3), (items[1], -0.2), (items[2], 0.5)]
    scores: list[list[float]] = [[], []]

    ema_steps([start, None], [steps, [(items[3], 0.3), (items[4], 0.3)]], scores)

    held, expected = start, []
    for item, weight in steps:
        if weight > 0:  # negative feedback is not an event the model should foresee
            expected.append(cos(held, item))  # a cosine: the item's norm left out
        held = ema_update(held, item, weight)
    assert scores[0] == pytest.approx(expected, rel=1e-5)
    # A user without a vector has nothing to score the first step with; the second is scored
    # against the vector the first one gave.
    assert scores[1] == pytest.approx([cos(items[3], items[4])], rel=1e-5)
