"""Qdrant point ids: derived from item ids, integers, checked at publish and at search."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from batch import publish
from core.vectors import point_id
from core.vectors.base import VectorIndexError, check_point_ids

pytestmark = pytest.mark.unit


def test_point_ids_are_stable_63_bit_integers_distinct_per_item() -> None:
    ids = [point_id(f"item-{n}") for n in range(10_000)]
    assert all(isinstance(i, int) and 0 <= i < 2**63 for i in ids)
    assert len(set(ids)) == len(ids)
    # Fixed by the item id alone, so that every process computes the same one.
    assert point_id("item-7") == uuid.uuid5(uuid.UUID("6f1c3a52-3c1e-4a8e-9d56-0f9e5b1f7a10"),
                                            "item-7").int >> 65  # fmt: skip


def test_publishing_refuses_two_items_with_one_point_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "point_id", lambda item: 42 if item in {"a", "c"} else 7)
    with pytest.raises(ValueError, match=r"items 'a' and 'c' map to the same point id 42"):
        publish._refuse_colliding_point_ids(["a", "b", "c"])
    publish._refuse_colliding_point_ids(["a", "b"])  # no collision: nothing to say


def test_a_version_with_uuid_point_ids_is_refused_with_what_to_do() -> None:
    check_point_ids([SimpleNamespace(id=point_id("x"))], "v2")
    check_point_ids([], "v2")
    with pytest.raises(VectorIndexError, match=r"'v1' has UUID point ids.*recsys train"):
        check_point_ids([SimpleNamespace(id=uuid.uuid4())], "v1")
