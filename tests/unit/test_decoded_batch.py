"""Splitting a decoded batch into lanes that can be applied concurrently."""

from __future__ import annotations

import pytest

from schemas import new_event
from streams.applier import SourcedEvent
from streams.processor import DecodedBatch

pytestmark = pytest.mark.unit


def test_a_split_keeps_each_partition_whole_and_in_order() -> None:
    batch = DecodedBatch()
    for offset, partition in enumerate([0, 1, 2, 3, 1, 0, 3, 2, 0]):
        event = new_event("view", f"u{partition}", "i1")
        batch.events.append(SourcedEvent(event, "events.view", partition, offset))
        batch.spans.append(None)

    lanes = batch.split(2)

    assert [[(e.partition, e.offset) for e in lane.events] for lane in lanes] == [
        [(0, 0), (2, 2), (0, 5), (2, 7), (0, 8)],
        [(1, 1), (3, 3), (1, 4), (3, 6)],
    ]
    assert [len(lane.spans) for lane in lanes] == [5, 4]
    assert batch.split(1)[0].events == batch.events
