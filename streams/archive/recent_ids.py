"""The event ids an archiver has written lately, to leave out a duplicate publish of one."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class RecentIds:
    """Ids archived within `window_s` (of this process's clock), at most `limit` of them: a
    producer's retry publishes the same event seconds later, not hours. Bounded so that a busy
    archiver's memory is too (about 190 bytes an id)."""

    def __init__(self, window_s: float, limit: int) -> None:
        self.window_s = window_s
        self.limit = limit
        self._order: deque[tuple[float, str]] = deque()
        self._ids: set[str] = set()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_ids: Iterable[str], now: float) -> None:
        for event_id in event_ids:
            if event_id not in self._ids:
                self._ids.add(event_id)
                self._order.append((now, event_id))
        oldest = now - self.window_s
        while self._order and (self._order[0][0] < oldest or len(self._order) > self.limit):
            self._ids.discard(self._order.popleft()[1])
