"""Attribution: which experiment arm a click or purchase is credited to.

Pure, no I/O. The stream worker (`streams.applier`) runs `attribute` over each user's fresh
events and impressions, with what the user's state remembers of their recent impressions
(`Touches`, stored in `core.user_state`), and counts the credits it returns in the item
shards' experiment counters (`core.keys.experiment_counts`). Reports read those counters
(`core.experiment_store`).

The rule (last touch):
- an impression that carries an experiment's arm counts one impression for that arm, and one
  user the first time this user is seen in that arm;
- a click or purchase that carries a `recommendation_id` is credited to that impression's arm;
  one without is credited to the newest impression that showed its item; either way only
  within `window_s` after the impression (and up to `CLOCK_SKEW_S` before it: the API's clock
  and the producer's differ);
- an impression counts as clicked (converted) once, however many clicks (purchases) it got.
- a click or purchase naming a recommendation the user's state does not know yet waits
  (`Pending`, up to `PENDING_KEPT`, within the window) for its impression: the worker reads the
  impression topic and the event topics side by side, in no set order between them, so a click
  posted right after its answer may be applied first. When the impression comes, the click is
  credited as if it had come after it (in the impression's counters).
What nothing credits: events of users who were never shown an experiment's answer, answers
older than the window, and clicks without a recommendation id applied before the impression
that showed their item.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# What is counted per arm; a report's rates are ratios of these.
Outcome = Literal[
    "users", "impressions", "clicked_impressions", "clicks", "purchases", "converted_impressions"
]
OUTCOMES: tuple[Outcome, ...] = (
    "users",
    "impressions",
    "clicked_impressions",
    "clicks",
    "purchases",
    "converted_impressions",
)
CLOCK_SKEW_S = 60
# Items of an impression remembered for last-touch attribution: the top of an answer is where
# clicks happen, and each item costs 4 bytes of the user's state while a window lasts.
TOUCH_ITEMS = 20
# Arms a user's state remembers having counted them in (so a user is counted once per arm).
EXPOSURES_KEPT = 4
# Clicks and purchases waiting for their impression (11 bytes each).
PENDING_KEPT = 8
_CLICKED, _CONVERTED = 1, 2
_TOUCH_HEAD = struct.Struct(">6sIBB")  # recommendation id prefix, ts s, arm index, flags
_PENDING = struct.Struct(">6sIB")  # recommendation id prefix, ts s, 0 click / 1 purchase
# The events that act on an impressed item: what attribution credits, and what labels an
# impressed item positive when the ranker learns from impressions (`batch.ranking.impressions`).
ACTED_TYPES = ("click", "purchase")
_TAG = struct.Struct(">I")


def recommendation_prefix(recommendation_id: uuid.UUID) -> bytes:
    """The first 6 bytes of a recommendation id (48 random bits): how touches name it."""
    return recommendation_id.bytes[:6]


def item_tag(item_id: str) -> int:
    """An item id as a user's state names it in fatigue and touch records (CRC-32: 4 bytes
    instead of the id; two items of a user's few dozen records share one with odds of about 1
    in 10 million)."""
    return zlib.crc32(item_id.encode())


@dataclass(frozen=True)
class Arm:
    experiment: str
    variant: str


@dataclass
class Touch:
    """One recent impression of an experiment's answer to the user."""

    recommendation: bytes
    ts_s: int
    arm: int  # index into `Touches.arms`
    flags: int
    items: tuple[int, ...]  # `item_tag` of the first `TOUCH_ITEMS` items shown


@dataclass(frozen=True)
class Pending:
    """A click or purchase whose recommendation's impression was not applied yet."""

    recommendation: bytes
    ts_s: int
    event_type: str


@dataclass
class Touches:
    """A user's recent impressions of experiment answers (newest first), the arms the user was
    counted in (newest last) and the clicks waiting for their impression, as stored in the
    user's state."""

    touches: list[Touch] = field(default_factory=list)
    arms: list[Arm] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)

    def packed(self) -> list[Any]:
        return [
            [[a.experiment, a.variant] for a in self.arms],
            b"".join(
                _TOUCH_HEAD.pack(t.recommendation, t.ts_s, t.arm, t.flags)
                + bytes([len(t.items)])
                + b"".join(_TAG.pack(tag) for tag in t.items)
                for t in self.touches
            ),
            b"".join(
                _PENDING.pack(p.recommendation, p.ts_s, ACTED_TYPES.index(p.event_type))
                for p in self.pending
            ),
        ]

    @classmethod
    def unpacked(cls, raw: Sequence[Any] | None) -> Touches:
        if not raw:
            return cls()
        arms, blob, waiting = (*raw, b"")[:3]
        touches = []
        at = 0
        while at < len(blob):
            recommendation, ts_s, arm, flags = _TOUCH_HEAD.unpack_from(blob, at)
            at += _TOUCH_HEAD.size
            count = blob[at]
            at += 1
            items = tuple(tag for (tag,) in _TAG.iter_unpack(blob[at : at + 4 * count]))
            at += 4 * count
            touches.append(Touch(recommendation, ts_s, arm, flags, items))
        pending = [
            Pending(rid, ts_s, ACTED_TYPES[code])
            for rid, ts_s, code in _PENDING.iter_unpack(waiting)
        ]
        return cls(touches, [Arm(e, v) for e, v in arms], pending)

    def __bool__(self) -> bool:
        return bool(self.touches or self.arms or self.pending)


@dataclass(frozen=True)
class Shown:
    """An impression, as attribution reads it."""

    recommendation_id: uuid.UUID
    ts_s: float
    experiment: str | None
    variant: str | None
    item_ids: Sequence[str]


@dataclass(frozen=True)
class Acted:
    """A click or purchase (other events are never credited)."""

    event_type: str
    ts_s: float
    item_id: str
    recommendation_id: uuid.UUID | None


@dataclass(frozen=True)
class Credit:
    arm: Arm
    outcome: Outcome
    ts_s: float  # when it happened: the counters' time bucket


@dataclass(frozen=True)
class AttributionConfig:
    window_s: int = 3600
    max_touches: int = 16


def attribute(
    state: Touches, happened: Iterable[Shown | Acted], config: AttributionConfig
) -> tuple[Touches, list[list[Credit]]]:
    """The user's touches after `happened` (their fresh impressions and events, oldest first),
    and the credits of each of them, in the same order (an empty list for one not credited)."""
    arms = list(state.arms)
    touches = [Touch(t.recommendation, t.ts_s, t.arm, t.flags, t.items) for t in state.touches]
    pending = list(state.pending)
    credits: list[list[Credit]] = []
    happened_list = list(happened)
    window = config.window_s
    for what in happened_list:
        if isinstance(what, Shown):
            credits.append(_shown(what, arms, touches, pending, window))
        else:
            credits.append(_acted(what, arms, touches, pending, window))
    if touches or pending:
        # What is older than the window before the newest thing the user did credits nothing.
        newest = max(
            [t.ts_s for t in touches]
            + [p.ts_s for p in pending]
            + [int(w.ts_s) for w in happened_list]
        )
        touches = [t for t in touches if t.ts_s >= newest - window][: config.max_touches]
        pending = [p for p in pending if p.ts_s >= newest - window][-PENDING_KEPT:]
    used = {t.arm for t in touches}
    # Arms no touch points at any more can go, oldest first, past `EXPOSURES_KEPT`; indices of
    # the arms kept are rewritten.
    keep = [n for n, _ in enumerate(arms) if n in used or n >= len(arms) - EXPOSURES_KEPT]
    if len(keep) < len(arms):
        moved = {old: new for new, old in enumerate(keep)}
        arms = [arms[n] for n in keep]
        for touch in touches:
            touch.arm = moved[touch.arm]
    return Touches(touches, arms, pending), credits


def _in_window(touch: Touch, ts_s: float, window_s: int) -> bool:
    return touch.ts_s - CLOCK_SKEW_S <= ts_s <= touch.ts_s + window_s


def _shown(
    shown: Shown, arms: list[Arm], touches: list[Touch], pending: list[Pending], window_s: int
) -> list[Credit]:
    if shown.experiment is None or shown.variant is None:
        return []
    arm = Arm(shown.experiment, shown.variant)
    credits = [Credit(arm, "impressions", shown.ts_s)]
    if arm not in arms:
        arms.append(arm)
        credits.append(Credit(arm, "users", shown.ts_s))
    touch = Touch(
        recommendation_prefix(shown.recommendation_id),
        int(shown.ts_s),
        arms.index(arm),
        0,
        tuple(item_tag(i) for i in shown.item_ids[:TOUCH_ITEMS]),
    )
    # Newest first, and an impression applied out of order still lands in its place.
    at = next((n for n, t in enumerate(touches) if t.ts_s <= touch.ts_s), len(touches))
    touches.insert(at, touch)
    waiting = [p for p in pending if p.recommendation == touch.recommendation]
    for early in sorted(waiting, key=lambda p: p.ts_s):
        pending.remove(early)
        if _in_window(touch, early.ts_s, window_s):
            credits += _credit(touch, arm, early.event_type, early.ts_s)
    return credits


def _acted(
    acted: Acted, arms: list[Arm], touches: list[Touch], pending: list[Pending], window_s: int
) -> list[Credit]:
    if acted.event_type not in ACTED_TYPES:
        return []
    if acted.recommendation_id is not None:
        wanted = recommendation_prefix(acted.recommendation_id)
        named = [t for t in touches if t.recommendation == wanted]
        if not named:  # its impression is not applied yet: it waits for it
            pending.append(Pending(wanted, int(acted.ts_s), acted.event_type))
            return []
        found = next((t for t in named if _in_window(t, acted.ts_s, window_s)), None)
    else:
        tag = item_tag(acted.item_id)
        found = next(
            (t for t in touches if tag in t.items and _in_window(t, acted.ts_s, window_s)), None
        )
    if found is None:
        return []
    return _credit(found, arms[found.arm], acted.event_type, acted.ts_s)


def _credit(touch: Touch, arm: Arm, event_type: str, ts_s: float) -> list[Credit]:
    """A click's or purchase's credits to `touch`'s arm (the impression counted once)."""
    if event_type == "click":
        credits = [Credit(arm, "clicks", ts_s)]
        if not touch.flags & _CLICKED:
            touch.flags |= _CLICKED
            credits.append(Credit(arm, "clicked_impressions", ts_s))
    else:
        credits = [Credit(arm, "purchases", ts_s)]
        if not touch.flags & _CONVERTED:
            touch.flags |= _CONVERTED
            credits.append(Credit(arm, "converted_impressions", ts_s))
    return credits
