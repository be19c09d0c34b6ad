"""The simulator's users, funnel and schedules (no Kafka needed)."""

from __future__ import annotations

from collections import Counter
from itertools import islice, pairwise

import numpy as np
import pandas as pd
import pytest

from recsys.simulator import Catalog, TasteModel, at_rate, replay_schedule

pytestmark = pytest.mark.unit

GENRES = ("Drama", "Comedy", "Horror", "Western", "Noir", "Musical")


def catalog() -> Catalog:
    ids = [f"i{n}" for n in range(120)]
    genres: list[tuple[str, ...]] = [(GENRES[n % len(GENRES)],) for n in range(120)]
    popularity = np.full(120, 1 / 120)
    return Catalog(ids, genres, popularity)


def test_users_stay_with_their_favourite_genres() -> None:
    cat = catalog()
    genre_of = dict(zip(cat.item_ids, cat.genres, strict=True))
    model = TasteModel(cat, users=50, seed=3)
    per_user: dict[str, Counter[str]] = {}
    for event in islice(model.events(), 6000):
        per_user.setdefault(event.user_id, Counter())[genre_of[event.item_id][0]] += 1
    heavy = [c for c in per_user.values() if sum(c.values()) >= 40]
    assert heavy
    for counts in heavy:
        top_two = sum(n for _, n in counts.most_common(2))
        assert top_two / sum(counts.values()) > 0.7  # 80% from the favourites, plus chance


def test_funnel_every_purchase_follows_a_click_and_every_click_a_view() -> None:
    events = list(islice(TasteModel(catalog(), users=20, seed=1).events(), 3000))
    kinds = Counter(e.event_type for e in events)
    assert kinds["view"] > kinds["click"] > kinds["purchase"] > 0
    for before, after in pairwise(events):
        if after.event_type == "purchase":
            assert (before.event_type, before.item_id) == ("click", after.item_id)
        if after.event_type == "click":
            assert (before.event_type, before.item_id) == ("view", after.item_id)
    assert TasteModel(catalog(), 20, seed=1).session().__next__() == (
        TasteModel(catalog(), 20, seed=1).session().__next__()
    )


def test_schedules_are_even_or_follow_the_data_faster() -> None:
    events = list(islice(TasteModel(catalog(), users=5).events(), 4))
    assert [due for due, _ in at_rate(iter(events), rate=2.0)] == [0.0, 0.5, 1.0, 1.5]
    rows = pd.DataFrame(
        {
            "user_id": ["a", "b", "a"],
            "item_id": ["x", "y", "z"],
            "ts": [1000, 500, 1500],
            "event_type": ["rating", "click", "rating"],
            "weight": [1.0, 1.0, 1.0],
        }
    )
    schedule = list(replay_schedule(rows, speed=100.0))
    assert [due for due, _ in schedule] == [0.0, 5.0, 10.0]
    assert [(e.user_id, e.item_id, e.event_type) for _, e in schedule] == [
        ("b", "y", "click"),
        ("a", "x", "purchase"),
        ("a", "z", "purchase"),
    ]
    assert int(schedule[0][1].ts.timestamp()) == 500
