"""The packed user state (format 2) and the reading of format 1."""

from __future__ import annotations

import uuid

import msgpack
import numpy as np
import pytest

from core.attribution import item_tag
from core.rules import WindowCounts
from core.user_state import (
    LEGACY_FIELDS,
    Fatigue,
    Feedback,
    FeedbackEntry,
    History,
    HistoryEntry,
    RecentIds,
    UserState,
    version_tag,
)
from tests.format1 import format1_fields

pytestmark = pytest.mark.unit


def test_packed_state_round_trips_and_moves_its_change_counter() -> None:
    vector = np.linspace(-1, 1, 64, dtype=np.float32)
    state = UserState(
        vector=vector,
        vector_version=version_tag("v1"),
        events=3,
        last_event_ms=1_700_000_000_123,
        windows={"5m": WindowCounts(600, {"view": 2, "purchase": 1}), "5m_prev": None},
        genres={"Drama": 8.004, "Noir": 0.3},
        recent=History().push([HistoryEntry(1_700_000_000_123, "purchase", "i9")], 50),
        recent_ids=RecentIds().push([(uuid.uuid4().bytes, 1_700_000_000)], 3600, 10),
        offsets={"v:3": 41},
    )
    packed = state.encode(updated_ms=1_700_000_000_456)
    back = UserState.decode(packed)
    assert back.change == 1
    assert back.change_token == packed[:4]
    assert back.vector is not None
    assert back.vector.dtype == np.float32
    np.testing.assert_allclose(back.vector, vector, atol=1e-3)  # float16 on the way
    assert back.vector_is_of("v1")
    assert not back.vector_is_of("v2")
    assert (back.events, back.updated_ms) == (3, 1_700_000_000_456)
    assert back.last_event_ms == 1_700_000_000_123
    assert back.windows == {"5m": WindowCounts(600, {"view": 2, "purchase": 1})}
    assert back.genres == {"Drama": 8.0, "Noir": 0.3}
    assert back.history == state.history
    assert back.recent_ids == state.recent_ids
    assert back.offsets == {"v:3": 41}
    assert UserState.decode(back.encode(1)).change == 2
    assert UserState.decode(None) == UserState()


def test_an_unknown_state_format_is_refused_by_name() -> None:
    packed = bytearray(UserState(events=1).encode(1))
    packed[4] = 9
    with pytest.raises(ValueError, match="format 9"):
        UserState.decode(bytes(packed))


def test_format_1_fields_decode_to_the_same_state() -> None:
    history = [HistoryEntry(2_000, "click", "a|b"), HistoryEntry(1_000, "view", "c")]
    fields = format1_fields(history, change=7, vector=np.ones(4), model_version="v0",
                            offsets={"v:0": 5})  # fmt: skip
    state = UserState.decode([fields.get(name) for name in LEGACY_FIELDS])
    assert state.history == history
    assert (state.events, state.offsets) == (2, {"v:0": 5})
    assert state.vector_is_of("v0")
    assert state.change == 7
    assert state.change_token == b"7"
    assert state.vector is not None
    assert state.vector.tolist() == [1.0] * 4
    assert UserState.decode(state.encode(4_000)).change == 8  # the counter goes on


def test_feedback_keeps_each_items_newest_entry_within_its_time_and_limit() -> None:
    feedback = Feedback().push(
        [FeedbackEntry("a", 100, "dislike"), FeedbackEntry("b", 90, "hide")], keep_s=50, limit=3
    )
    feedback = feedback.push([FeedbackEntry("b", 120, "dislike")], keep_s=50, limit=3)
    assert [(e.item_id, e.ts_s, e.event_type) for e in feedback.entries] == [
        ("b", 120, "dislike"),
        ("a", 100, "dislike"),
    ]
    assert feedback.excluded(now_s=130, exclude_s=20) == {"b"}  # a's 20 s are over at 130
    older = feedback.push([FeedbackEntry("c", 200, "hide")], keep_s=50, limit=3)
    assert [e.item_id for e in older.entries] == ["c"]  # a and b are more than 50 s older
    capped = feedback.push([FeedbackEntry("c", 121, "hide")], keep_s=50, limit=2)
    assert [e.item_id for e in capped.entries] == ["c", "b"]


def test_fatigue_counts_impressions_per_item_in_a_window_and_forgets_engaged_items() -> None:
    fatigue = Fatigue()
    for ts in (0, 10, 20):
        fatigue = fatigue.shown(["a", "b"], ts, window_s=100, limit=10)
    fatigue = fatigue.shown(["c"], 30, window_s=100, limit=10)
    assert fatigue.tired(now_s=40, window_s=100, threshold=3) == {item_tag("a"), item_tag("b")}
    assert fatigue.tired(now_s=101, window_s=100, threshold=3) == set()  # the window passed
    assert fatigue.engaged(["a"]).tired(40, 100, 3) == {item_tag("b")}
    # A new window starts over; the most recently shown items are kept within the limit.
    again = fatigue.shown(["a"], 150, window_s=100, limit=2)
    assert again.counts()[item_tag("a")] == (150, 1)
    assert set(again.counts()) == {item_tag("a"), item_tag("c")}
    assert len(again.raw) == 2 * 9


def test_feedback_and_fatigue_round_trip_and_a_state_without_them_reads_empty() -> None:
    state = UserState(
        feedback=Feedback((FeedbackEntry("i1", 5, "hide"),)),
        fatigue=Fatigue().shown(["i2"], 7, 100, 10),
    )
    decoded = UserState.decode(state.encode(10))
    assert decoded.feedback == state.feedback
    assert decoded.fatigue == state.fatigue
    # Written before the two were appended: eleven fields.
    header, body = state.encode(10)[:5], msgpack.unpackb(state.encode(10)[5:])
    older = UserState.decode(header + msgpack.packb(body[:11], use_bin_type=True))
    assert older.feedback == Feedback()
    assert older.fatigue == Fatigue()


def test_history_finds_the_newest_item_of_some_event_types() -> None:
    history = History().push(
        [
            HistoryEntry(3_000, "dislike", "c"),
            HistoryEntry(2_000, "click", "b"),
            HistoryEntry(1_000, "view", "a"),
        ],
        10,
    )
    assert history.newest_of(frozenset({"view", "click"})) == "b"
    assert history.newest_of(frozenset({"view"})) == "a"
    assert history.newest_of(frozenset({"purchase"})) is None
    assert History().newest_of(frozenset({"view"})) is None
