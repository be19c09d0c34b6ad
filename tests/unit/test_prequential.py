"""Protocol P3 (prequential replay): split, scoring, popularity baselines and the in-process
replay of the stream's update rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from batch.data import Dataset
from batch.evaluation.online_updates import OnlineUpdateParams, simulate, tune
from batch.evaluation.prequential import (
    OnlinePopularity,
    PrequentialScores,
    PrequentialSplit,
    ReplayRun,
    p3_split,
    popularity_baselines,
    rank_of,
    replay_events,
)
from batch.publish import ModelArtifacts
from core.rules import ema_update, normalize
from schemas.events import EventType

pytestmark = pytest.mark.unit

DAY = 86_400
WEIGHTS: dict[EventType, float] = {"view": 0.05, "click": 0.15, "purchase": 0.35}


def dataset(rows: list[tuple[str, str, int]]) -> Dataset:
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    interactions["event_type"] = "rating"
    interactions["weight"] = np.float32(1.0)
    items = sorted(set(interactions["item_id"]))
    metadata = pd.DataFrame(
        {"item_id": items, "title": items, "genres": [()] * len(items), "year": pd.NA}
    )
    return Dataset(name="hand", interactions=interactions, items=metadata)


def hand_split(
    fit: list[tuple[str, str, int]], replay: list[tuple[str, str, int]]
) -> PrequentialSplit:
    return PrequentialSplit(ReplayRun.REPORT, dataset(fit), dataset(replay).interactions)


def twenty_rows() -> Dataset:
    # Timestamps deliberately out of file order: the split must sort by time.
    rows = [(f"u{n % 3}", f"i{n % 7}", 1000 + (19 - n) * 10) for n in range(20)]
    return dataset(rows)


def test_report_run_fits_on_the_first_90_percent_in_time_order() -> None:
    split = p3_split(twenty_rows(), ReplayRun.REPORT)
    assert len(split.fit.interactions) == 18
    assert len(split.replay) == 2
    assert split.fit.interactions["ts"].max() <= split.replay["ts"].min()
    assert list(split.replay["ts"]) == sorted(split.replay["ts"])


def test_tuning_run_replays_the_rows_between_80_and_90_percent() -> None:
    rows = twenty_rows().chronological()
    split = p3_split(twenty_rows(), ReplayRun.TUNING)
    assert len(split.fit.interactions) == 16
    assert list(split.replay["ts"]) == list(rows["ts"].iloc[16:18])


def test_an_item_already_seen_is_applied_but_not_scored_and_cold_users_are_marked() -> None:
    rows = [
        ("a", "x", 1),
        ("a", "y", 2),
        ("b", "x", 3),
        ("a", "x", 4),
        ("c", "z", 5),
        ("c", "z", 6),
    ]
    split = hand_split(rows[:3], rows[3:])
    events = []
    for event in replay_events(split):
        events.append((event.user_id, event.item_id, event.scored, event.warm, set(event.seen)))
    assert events == [
        ("a", "x", False, True, {"x", "y"}),  # a saw x in the fit rows
        ("c", "z", True, False, set()),  # c is cold
        ("c", "z", False, False, {"z"}),  # the replay itself adds to seen(u)
    ]


def test_rank_excludes_seen_items_and_breaks_ties_by_index() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.8, 0.1])
    assert rank_of(scores, 2, np.array([], dtype=np.int64)) == 4  # 0.9, 0.8, then the tie
    assert rank_of(scores, 1, np.array([], dtype=np.int64)) == 3
    assert rank_of(scores, 2, np.array([0, 1])) == 2


def test_scores_follow_the_protocol_formulas() -> None:
    scores = PrequentialScores()
    scores.add(1, warm=True)
    scores.add(3, warm=False)
    scores.add(12, warm=False)
    scores.add(None, warm=False)
    summary = scores.summary()
    assert summary["overall"]["hr@10"] == 0.5
    assert summary["overall"]["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4, abs=1e-4)
    assert summary["overall"]["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 4, abs=1e-4)
    assert summary["warm"]["scored_events"] == 1
    cold = summary["cold"]
    assert {k: cold[k] for k in ("hr@10", "ndcg@10", "mrr", "scored_events")} == {
        "hr@10": 0.3333,
        "ndcg@10": 0.1667,
        "mrr": 0.1389,
        "scored_events": 3,
    }
    # hits 0, 1, 0: mean 1/3, sample sd 0.5774, half-width 1.96 * 0.5774 / sqrt(3)
    low, high = cold["hr@10_ci95"]
    assert (low, high) == pytest.approx((1 / 3 - 0.6533, 1 / 3 + 0.6533), abs=1e-3)


def test_seven_day_popularity_forgets_what_left_the_window() -> None:
    fit = dataset([("a", "old", 0), ("b", "old", 1), ("c", "new", 8 * DAY)]).interactions
    window = OnlinePopularity(["old", "new"], fit, window_s=7 * DAY)
    everything = OnlinePopularity(["old", "new"], fit)
    assert window.rank("new", [], 8 * DAY) == 1  # "old" fell out of the last 7 days
    assert everything.rank("new", [], 8 * DAY) == 2
    window.apply("old", 8 * DAY + 1)
    window.apply("old", 8 * DAY + 2)
    assert window.rank("new", [], 8 * DAY + 3) == 2


def test_popularity_baselines_are_updated_by_the_replay() -> None:
    fit = [("a", "p", 1), ("b", "p", 2), ("c", "q", 3)]
    split = hand_split(fit, [("d", "q", 4), ("e", "q", 5), ("f", "q", 6)])
    scores = popularity_baselines(split, ["p", "q"])["popularity-global"]
    # d: p (2) beats q (1). e: q has caught up, the tie goes to p (first in the catalog).
    # f: q (3) now leads.
    assert scores.rrs == [0.5, 0.5, 1.0]


def four_item_model() -> ModelArtifacts:
    return ModelArtifacts(
        model="als",
        dataset="hand",
        user_ids=np.array(["a"]),
        item_ids=np.array(["x", "y", "z", "w"]),
        user_vectors=np.array([[1.0, 0.0]], dtype=np.float32),
        item_vectors=np.array([[1.0, 0.1], [0.0, 1.0], [0.7, 0.7], [0.9, -0.2]], np.float32),
        item_payloads=[{"title": i, "genres": [], "year": None} for i in "xyzw"],
        popularity=np.array([3, 1, 1, 1]),
        trained_until=0,
        params={"alpha": 2.0, "regularization": 0.1},
    )


def test_in_process_ema_moves_the_user_as_the_worker_rule_does() -> None:
    split = hand_split([("a", "x", 1)], [("a", "y", 2), ("a", "y", 3), ("a", "z", 4)])
    model = four_item_model()
    weights: dict[EventType, float] = {"view": 0.05, "click": 0.15, "purchase": 0.9}
    scores = simulate(split, model, OnlineUpdateParams("ema", weights))
    # Event 1 (y), from the batch vector [1, 0]: w (0.9), z (0.7), y (0) -> rank 3 (x seen).
    # Event 2 (y again) is not scored but moves the user again (ratings are purchases).
    # Event 3 (z): the user now points at y, so z (0.7, 0.7) beats w (0.9, -0.2).
    after = normalize(model.user_vectors[0])
    for _ in range(2):
        after = ema_update(after, model.item_vectors[1], 0.9)
    assert float(model.item_vectors[2] @ after) > float(model.item_vectors[3] @ after)
    assert scores.rrs == [pytest.approx(1 / 3), 1.0]


def test_tuning_chooses_the_candidate_with_the_best_hit_rate() -> None:
    rows = [(f"u{n % 5}", f"i{(n * 7) % 11}", n) for n in range(200)]
    data = dataset(rows)
    split = p3_split(data, ReplayRun.TUNING)
    rng = np.random.default_rng(0)
    users = sorted(set(split.fit.interactions["user_id"]))
    items = sorted(set(data.interactions["item_id"]))
    model = ModelArtifacts(
        model="als",
        dataset="hand",
        user_ids=np.array(users),
        item_ids=np.array(items),
        user_vectors=rng.normal(size=(len(users), 4)).astype(np.float32),
        item_vectors=rng.normal(size=(len(items), 4)).astype(np.float32),
        item_payloads=[{"title": i, "genres": [], "year": None} for i in items],
        popularity=np.ones(len(items)),
        trained_until=0,
        params={},
    )
    result = tune(split, model, "ema", WEIGHTS)
    best = max(entry["hr@10"] for entry in result.grid)  # type: ignore[type-var]
    assert (
        result.grid[[e["ema_weights"] for e in result.grid].index(result.chosen.ema_weights)][
            "hr@10"
        ]
        == best
    )
    assert len(result.grid) > 1
