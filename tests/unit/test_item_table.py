"""Mapping the index's point ids back to the rows of a version's item table."""

from __future__ import annotations

import numpy as np
import pytest

from api.item_table import ItemTable
from core.vectors import PointScores, point_id

pytestmark = pytest.mark.unit


def table(item_ids: list[str]) -> ItemTable:
    return ItemTable(
        version="v1",
        item_ids=item_ids,
        titles=[f"Title {i}" for i in item_ids],
        genres=[("Drama",) for _ in item_ids],
        unit_vectors=np.eye(len(item_ids), 2, dtype=np.float32),
        row_of_point={point_id(item): row for row, item in enumerate(item_ids)},
        row_of_item={item: row for row, item in enumerate(item_ids)},
        popularity=np.zeros(len(item_ids)),
    )


def test_hit_rows_keep_the_search_order_and_scores() -> None:
    items = table(["a", "b", "c"])
    hits = PointScores([point_id("c"), point_id("a")], [0.9, 0.5])
    assert items.hit_rows(hits) == ([2, 0], [0.9, 0.5])


def test_points_the_table_lacks_are_left_out_with_their_scores() -> None:
    items = table(["a", "b"])
    hits = PointScores([point_id("unknown"), point_id("b"), point_id("another")], [0.9, 0.7, 0.6])
    assert items.hit_rows(hits) == ([1], [0.7])
