"""The ranking stage replayed in process (`batch.ranking`): no feature reads an event after the
one it is computed for, and the transition table stays within its bound."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from batch.datasets import load_dataset
from batch.evaluation.prequential import PrequentialSplit, ReplayRun, p3_split, replay_events
from batch.publish import ModelArtifacts
from batch.ranking.mirror import MirrorConfig, StreamMirror
from batch.ranking.train import default_ema, item_neighbours
from batch.train import fitted_artifacts
from core.ranking import FEATURE_VERSION
from core.ranking_store import RankingParts
from core.settings import Settings

pytestmark = pytest.mark.unit

DATASET = "synthetic:users=80,items=60,events=3000,seed=3"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[PrequentialSplit, ModelArtifacts]:
    dataset = load_dataset(DATASET, tmp_path_factory.mktemp("data"))
    split = p3_split(dataset, ReplayRun.REPORT)
    artifacts, data = fitted_artifacts(
        split.fit, split.fit.interactions, "als", {"factors": 8, "iterations": 5}
    )
    artifacts.ranking = RankingParts(None, FEATURE_VERSION, item_neighbours(data, 10, 5.0))
    return split, artifacts


def features_per_event(split: PrequentialSplit, artifacts: ModelArtifacts) -> list[np.ndarray]:
    settings = Settings(stream_transitions_top_n=5)
    mirror = StreamMirror(artifacts, MirrorConfig.from_settings(settings, default_ema(settings)))
    found = []
    for event in replay_events(split):
        found.append(mirror.candidates(event.user_id, event.seen).features)
        mirror.apply(event)
    return found


def test_no_feature_reads_an_event_after_its_own(
    prepared: tuple[PrequentialSplit, ModelArtifacts],
) -> None:
    split, artifacts = prepared
    middle = len(split.replay) // 2
    tail = split.replay.iloc[middle:].sample(frac=1.0, random_state=1)
    permuted = replace(
        split, replay=pd.concat([split.replay.iloc[:middle], tail], ignore_index=True)
    )
    before = features_per_event(split, artifacts)
    after = features_per_event(permuted, artifacts)
    for n in range(middle):
        np.testing.assert_array_equal(before[n], after[n])
    assert any(  # the permutation does change what follows the midpoint
        a.shape != b.shape or not np.array_equal(a, b)
        for a, b in zip(before[middle:], after[middle:], strict=True)
    )


def test_the_transition_table_keeps_its_bound(
    prepared: tuple[PrequentialSplit, ModelArtifacts],
) -> None:
    split, artifacts = prepared
    settings = Settings(stream_transitions_top_n=3)
    mirror = StreamMirror(artifacts, MirrorConfig.from_settings(settings, default_ema(settings)))
    for event in replay_events(split):
        mirror.apply(event)
    sizes = [len(counts) for counts in mirror.transitions.values()]
    assert sizes
    assert max(sizes) <= 2 * 3  # the worker's bulk trim: back to 3 once above 6
