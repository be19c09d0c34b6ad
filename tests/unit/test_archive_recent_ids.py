"""`streams.archive.recent_ids.RecentIds`: the archiver's window of ids it wrote lately."""

from __future__ import annotations

import uuid

import pytest

from streams.archive import recent_ids
from streams.archive.recent_ids import GENERATIONS, RecentIds

pytestmark = pytest.mark.unit


def ids(n: int, seed: int = 0) -> list[str]:
    return [str(uuid.UUID(int=seed * 1_000_000 + k + 1)) for k in range(n)]


def test_added_ids_are_known_in_the_newest_generation_and_in_frozen_ones() -> None:
    recent = RecentIds(window_s=3600, limit=GENERATIONS * 10)  # generations of 10
    written = ids(35)
    recent.add(written, now=0.0)
    assert len(recent) == 35  # three frozen generations and five ids in the newest
    others = ids(20, seed=1)
    assert recent.known(written + others) == set(written)
    assert written[3] in recent
    assert others[0] not in recent
    assert recent.known([]) == set()


def test_ids_are_kept_for_the_window_then_forgotten_a_generation_at_a_time() -> None:
    window_s = 160.0
    recent = RecentIds(window_s=window_s, limit=1_000_000)
    span_s = window_s / GENERATIONS
    first, second = ids(5), ids(5, seed=1)
    recent.add(first, now=0.0)
    recent.add(second, now=span_s)  # the first generation is frozen by its span
    recent.add([], now=window_s - 1)
    assert recent.known(first + second) == set(first + second)  # all within the window
    recent.add([], now=window_s + 1)  # the first's newest add is now older than the window
    assert recent.known(first + second) == set(second)
    recent.add([], now=window_s + 2 * span_s)
    assert recent.known(second) == set()
    assert len(recent) == 0


def test_the_limit_drops_the_oldest_generations_and_keeps_the_newest_ids() -> None:
    limit = GENERATIONS * 10
    recent = RecentIds(window_s=3600, limit=limit)
    written = ids(3 * limit)
    for start in range(0, len(written), 7):
        recent.add(written[start : start + 7], now=start / 1000)
        assert len(recent) <= limit + recent.generation_size
    newest = written[-(limit - recent.generation_size) :]
    assert recent.known(newest) == set(newest)
    assert recent.known(written[:limit]) == set()


def test_ids_whose_digests_share_their_first_half_are_told_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The frozen generations are searched by the first 8 bytes: make them all alike.
    real = recent_ids.digest
    monkeypatch.setattr(recent_ids, "digest", lambda event_id: b"\x07" * 8 + real(event_id)[8:])
    recent = RecentIds(window_s=3600, limit=GENERATIONS * 4)
    written, others = ids(12), ids(12, seed=1)
    recent.add(written, now=0.0)
    assert recent.known(written + others) == set(written)
