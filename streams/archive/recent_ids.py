"""The event ids an archiver has written lately, to leave out a duplicate publish of one."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

# The window is kept in this many generations: a generation is frozen into a sorted array once
# it holds `limit / GENERATIONS` ids or spans `window_s / GENERATIONS`, and forgotten whole.
GENERATIONS = 8


def digest(event_id: str) -> bytes:
    """16 bytes standing for an id: two different ids share one with odds of about 1e-27 among
    a million (BLAKE2b), so no new event is taken for a duplicate in practice."""
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()


class RecentIds:
    """Ids archived within `window_s` (of this process's clock), at most about `limit` of them: a
    producer's retry publishes the same event seconds later, not hours. Bounded so that a busy
    archiver's memory is too: the frozen generations hold 16 bytes an id in sorted numpy
    arrays (a set of id strings took about 190 bytes an id, ~190 MB at a million); only the
    newest generation is a Python set. An id is kept at least `window_s` and at most one
    generation's span longer, unless `limit` drops its generation first (the oldest goes)."""

    def __init__(self, window_s: float, limit: int) -> None:
        self.window_s = window_s
        self.limit = limit
        self.generation_size = max(1, limit // GENERATIONS)
        self.generation_span_s = window_s / GENERATIONS
        # (newest add, (first halves sorted, last halves in the same order))
        self._frozen: deque[tuple[float, tuple[np.ndarray, np.ndarray]]] = deque()
        self._frozen_ids = 0
        self._current: set[bytes] = set()
        self._current_since = 0.0
        self._current_newest = 0.0

    def __len__(self) -> int:
        return self._frozen_ids + len(self._current)

    def __contains__(self, event_id: str) -> bool:
        return bool(self.known([event_id]))

    def known(self, event_ids: Sequence[str]) -> set[str]:
        """Which of `event_ids` were added (and are still kept): one vectorised search per
        frozen generation for the whole batch."""
        digests = [digest(event_id) for event_id in event_ids]
        found = {i for i, d in zip(event_ids, digests, strict=True) if d in self._current}
        if not self._frozen or not digests:
            return found
        wanted = _halves(digests)
        for _newest, (high, low) in self._frozen:
            at = np.searchsorted(high, wanted[:, 0])
            inside = np.minimum(at, len(high) - 1)
            for n in np.flatnonzero(high[inside] == wanted[:, 0]).tolist():
                # Almost always one entry of that first half; ids sharing it are all checked.
                start = int(at[n])
                end = start + 1
                while end < len(high) and high[end] == high[start]:
                    end += 1
                if (low[start:end] == wanted[n, 1]).any():
                    found.add(event_ids[n])
        return found

    def add(self, event_ids: Iterable[str], now: float) -> None:
        if self._current and now - self._current_since >= self.generation_span_s:
            self._freeze()  # before this batch: the generation spans its share of the window
        for event_id in event_ids:
            if not self._current:
                self._current_since = now
            self._current.add(digest(event_id))
            self._current_newest = now
            if len(self._current) >= self.generation_size:
                self._freeze()
        self._forget(now)

    def _freeze(self) -> None:
        halves = _halves(list(self._current))
        order = np.argsort(halves[:, 0], kind="stable")
        generation = (halves[order, 0].copy(), halves[order, 1].copy())
        self._frozen.append((self._current_newest, generation))
        self._frozen_ids += len(order)
        self._current = set()

    def _forget(self, now: float) -> None:
        oldest = now - self.window_s
        frozen = self._frozen
        while frozen and (frozen[0][0] < oldest or len(self) > self.limit):
            self._frozen_ids -= len(frozen.popleft()[1][0])


def _halves(digests: list[bytes]) -> np.ndarray:
    """(n, 2) uint64: each digest's first and last 8 bytes; searched by the first."""
    return np.frombuffer(b"".join(digests), dtype=np.uint64).reshape(-1, 2)
