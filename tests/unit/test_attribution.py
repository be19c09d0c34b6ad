"""Last-touch attribution (`core.attribution`): which arm a click or purchase is credited to, what
is never credited, and the user's touches surviving their state's round trip."""

from __future__ import annotations

import uuid
from collections import Counter

import msgpack
import pytest

from core.attribution import (
    CLOCK_SKEW_S,
    Acted,
    Arm,
    AttributionConfig,
    Credit,
    Shown,
    Touches,
    attribute,
)
from core.user_state import UserState

pytestmark = pytest.mark.unit

CONFIG = AttributionConfig(window_s=600, max_touches=4)
T0 = 1_700_000_000.0


def shown(variant: str | None, at: float, items: list[str], rid: uuid.UUID | None = None) -> Shown:
    return Shown(rid or uuid.uuid4(), at, "home" if variant else None, variant, items)


def tally(credits: list[list[Credit]]) -> Counter[tuple[str, str]]:
    return Counter((c.arm.variant, c.outcome) for found in credits for c in found)


def test_a_click_naming_its_answer_credits_that_arm_and_its_impression_once() -> None:
    rid = uuid.uuid4()
    happened: list[Shown | Acted] = [
        shown("model", T0, ["a", "b"], rid),
        Acted("click", T0 + 5, "b", rid),
        Acted("click", T0 + 9, "a", rid),
        Acted("purchase", T0 + 20, "a", rid),
        Acted("view", T0 + 21, "a", None),  # views are never credited
    ]
    _, credits = attribute(Touches(), happened, CONFIG)
    assert tally(credits) == Counter(
        {
            ("model", "users"): 1,
            ("model", "impressions"): 1,
            ("model", "clicks"): 2,
            ("model", "clicked_impressions"): 1,
            ("model", "purchases"): 1,
            ("model", "converted_impressions"): 1,
        }
    )
    assert credits[4] == []
    assert [c.ts_s for c in credits[1]] == [T0 + 5, T0 + 5]  # bucketed by the click's time


def test_a_click_without_an_id_goes_to_the_newest_answer_that_showed_the_item() -> None:
    happened: list[Shown | Acted] = [
        shown("model", T0, ["a", "b"]),
        shown("random", T0 + 60, ["c", "a"]),
        Acted("click", T0 + 70, "a", None),
        Acted("click", T0 + 80, "b", None),
        Acted("click", T0 + 90, "z", None),  # never shown: not credited
    ]
    _, credits = attribute(Touches(), happened, CONFIG)
    assert [c.arm.variant for c in credits[2]] == ["random", "random"]
    assert [c.arm.variant for c in credits[3]] == ["model", "model"]
    assert credits[4] == []


def test_clicks_outside_the_window_are_not_credited() -> None:
    rid = uuid.uuid4()
    touches, _ = attribute(Touches(), [shown("model", T0, ["a"], rid)], CONFIG)
    late = [Acted("click", T0 + CONFIG.window_s + 1, "a", rid)]
    early = [Acted("click", T0 - CLOCK_SKEW_S - 1, "a", None)]
    in_time = [Acted("click", T0 + CONFIG.window_s, "a", None)]
    assert attribute(touches, late, CONFIG)[1] == [[]]
    assert attribute(touches, early, CONFIG)[1] == [[]]
    assert tally(attribute(touches, in_time, CONFIG)[1])[("model", "clicks")] == 1


def test_a_user_is_counted_once_per_arm_and_events_of_others_are_never_credited() -> None:
    touches, credits = attribute(Touches(), [shown("model", T0, ["a"])], CONFIG)
    touches, more = attribute(touches, [shown("model", T0 + 1, ["b"])], CONFIG)
    assert tally(credits + more)[("model", "users")] == 1
    assert tally(credits + more)[("model", "impressions")] == 2
    # An answer outside any experiment leaves no touch, and its click credits nothing.
    untouched, none = attribute(
        Touches(), [shown(None, T0, ["a"]), Acted("click", T0 + 1, "a", None)], CONFIG
    )
    assert not untouched
    assert none == [[], []]


def test_touches_are_bounded_by_count_and_window() -> None:
    happened = [shown("model", T0 + n, [f"i{n}"]) for n in range(10)]
    touches, _ = attribute(Touches(), happened, CONFIG)
    assert len(touches.touches) == CONFIG.max_touches
    assert [t.ts_s for t in touches.touches] == [int(T0) + n for n in (9, 8, 7, 6)]
    # A click long after: the touches it cannot be credited to any more are gone.
    later, _ = attribute(touches, [Acted("click", T0 + 10_000, "i9", None)], CONFIG)
    assert later.touches == []
    assert later.arms == [Arm("home", "model")]  # still counted in the arm


def test_touches_survive_the_state_round_trip_and_old_values_read_without_them() -> None:
    rid = uuid.uuid4()
    touches, _ = attribute(Touches(), [shown("model", T0, ["a", "b"], rid)], CONFIG)
    state = UserState(touches=touches)
    again = UserState.unpack(state.encode(updated_ms=1))
    assert again.touches == touches
    _, credits = attribute(again.touches, [Acted("click", T0 + 1, "b", rid)], CONFIG)
    assert tally(credits)[("model", "clicked_impressions")] == 1
    # A value written before touches existed (13 fields, not 14) reads with none.
    raw = UserState().encode(updated_ms=1)
    body = msgpack.unpackb(raw[5:])
    older = raw[:5] + msgpack.packb(body[:13], use_bin_type=True)
    assert not UserState.unpack(older).touches


def test_a_click_applied_before_its_impression_waits_for_it() -> None:
    rid, stale = uuid.uuid4(), uuid.uuid4()
    early = [Acted("click", T0 + 5, "a", rid), Acted("purchase", T0 + 9, "a", rid)]
    waiting, credits = attribute(Touches(), early, CONFIG)
    assert credits == [[], []]
    assert len(waiting.pending) == 2
    stored = UserState.unpack(UserState(touches=waiting).encode(updated_ms=1)).touches
    assert stored == waiting
    done, credits = attribute(stored, [shown("model", T0, ["a"], rid)], CONFIG)
    assert tally(credits) == Counter(
        {
            ("model", "users"): 1,
            ("model", "impressions"): 1,
            ("model", "clicks"): 1,
            ("model", "clicked_impressions"): 1,
            ("model", "purchases"): 1,
            ("model", "converted_impressions"): 1,
        }
    )
    assert done.pending == []
    # One whose impression never comes is forgotten after the window, and a few are kept.
    many = [Acted("click", T0 + n, "a", uuid.uuid4()) for n in range(20)]
    bounded, _ = attribute(Touches(), many, CONFIG)
    assert len(bounded.pending) == 8
    later, _ = attribute(bounded, [Acted("view", T0 + 10_000, "b", None)], CONFIG)
    assert later.pending == []
    # A click naming a known answer but outside its window is not credited, nor kept waiting.
    known, _ = attribute(Touches(), [shown("model", T0, ["a"], stale)], CONFIG)
    after, none = attribute(known, [Acted("click", T0 + 5000, "a", stale)], CONFIG)
    assert none == [[]]
    assert after.pending == []
