"""The ranker's training groups from impressions (`batch.ranking.impressions`): which impressed
items count as acted on, and the groups' features as of the impression."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.datasets import load_dataset
from batch.evaluation.prequential import PrequentialSplit, ReplayEvent, ReplayRun, p3_split
from batch.publish import ModelArtifacts
from batch.ranking.impressions import ImpressionGroup, impression_groups
from batch.ranking.mirror import MirrorConfig, StreamMirror
from batch.ranking.train import default_ema, item_neighbours, training_rows
from batch.train import fitted_artifacts
from core.ranking import FEATURE_VERSION
from core.ranking_store import RankingParts
from core.settings import Settings

pytestmark = pytest.mark.unit


def shown(recommendation: str, user: str, ts: int, items: list[str]) -> list[dict[str, object]]:
    return [
        {"recommendation_id": recommendation, "user_id": user, "item_id": item, "ts": ts,
         "position": position}
        for position, item in enumerate(items)
    ]  # fmt: skip


def test_an_item_counts_as_acted_on_when_its_user_clicked_or_bought_it_in_the_window() -> None:
    impressions = pd.DataFrame(
        shown("r1", "u", 100, ["a", "b", "c"])
        + shown("r2", "u", 200, ["d", "e"])
        + shown("r3", "v", 150, ["a", "b"])
    )
    interactions = pd.DataFrame(
        [
            ("u", "a", 120, "click"),
            ("u", "a", 130, "click"),  # twice: still one acted-on item
            ("u", "c", 110, "view"),  # a view is not acting on what was shown
            ("u", "d", 199, "purchase"),  # before its impression
            ("v", "a", 140, "click"),  # before r3
            ("v", "b", 300, "purchase"),  # after the 60 s window
            ("w", "e", 210, "click"),  # another user
        ],
        columns=["user_id", "item_id", "ts", "event_type"],
    )
    groups = impression_groups(impressions, interactions, 60)
    assert groups == [ImpressionGroup(100, "u", ["a", "b", "c"], [1, 0, 0])]
    assert impression_groups(impressions.iloc[:0], interactions, 60) == []


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrequentialSplit, ModelArtifacts]:
    dataset = load_dataset(
        "synthetic:users=60,items=50,events=2000,seed=5", tmp_path_factory.mktemp("d")
    )
    split = p3_split(dataset, ReplayRun.REPORT)
    artifacts, data = fitted_artifacts(
        split.fit, split.fit.interactions, "als", {"factors": 8, "iterations": 5}
    )
    artifacts.ranking = RankingParts(None, FEATURE_VERSION, item_neighbours(data, 10, 5.0))
    return split, artifacts


def test_an_impression_is_a_group_with_its_features_as_of_the_impression(
    prepared: tuple[PrequentialSplit, ModelArtifacts],
) -> None:
    split, artifacts = prepared
    settings = Settings()
    config = MirrorConfig.from_settings(settings, default_ema(settings))
    replay = split.replay
    event = replay.iloc[len(replay) // 2]
    user, ts = str(event["user_id"]), int(event["ts"])
    others = [i for i in map(str, artifacts.item_ids) if i != str(event["item_id"])][:2]
    group = ImpressionGroup(ts, user, [str(event["item_id"]), *others], [1, 0, 0])

    plain = training_rows(split, artifacts, config)
    with_shown = training_rows(split, artifacts, config, shown=[group])
    assert with_shown.impressions == 1
    assert len(with_shown.groups) == len(plain.groups) + 1
    assert len(with_shown.labels) == len(plain.labels) + 3

    # Independently: the stream as it stood before anything at or after the impression's time.
    mirror = StreamMirror(artifacts, config)
    mirror.warm_up(split.fit.interactions)
    seen = set(split.fit.interactions.loc[split.fit.interactions["user_id"] == user, "item_id"])
    for row in replay.loc[replay["ts"] < ts].itertuples(index=False):
        mirror.apply(
            ReplayEvent(0, str(row.user_id), str(row.item_id), int(row.ts), str(row.event_type),
                        True, True, set())
        )  # fmt: skip
        if str(row.user_id) == user:
            seen.add(str(row.item_id))
    found = mirror.candidates(user, seen, group.item_ids)
    rows = [found.pool.item_ids.index(item) for item in group.item_ids]
    expected = found.features[rows]
    starts = np.r_[0, np.cumsum(with_shown.groups)[:-1]]
    blocks = [
        (with_shown.features[s : s + 3], with_shown.labels[s : s + 3].tolist())
        for s, n in zip(starts, with_shown.groups, strict=True)
        if n == 3
    ]
    assert any(np.array_equal(f, expected) and y == [1, 0, 0] for f, y in blocks)
