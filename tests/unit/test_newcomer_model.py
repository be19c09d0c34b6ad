"""The first model a newcomer sees: what `recsys up` trains by default (`tuned=True` on the
default synthetic dataset) is chosen on that data's own validation split, and it beats the
popularity baselines on the held-out test period of the same protocol (P1), where the served
defaults (tuned for ml-100k) score below them."""

from __future__ import annotations

import pytest

from batch.datasets import load_dataset
from batch.evaluation.names import Protocol
from batch.evaluation.runner import evaluate_configuration
from batch.models.registry import SERVED_ALS_PARAMS
from batch.train import tuned_params
from recsys.up import UpOptions

pytestmark = pytest.mark.unit


def test_the_model_recsys_up_trains_beats_popularity_on_its_data() -> None:
    dataset = load_dataset(UpOptions().dataset, "/nonexistent")  # generated: no files read
    steps: list[tuple[int, int | None]] = []
    tuning = tuned_params(dataset, "als", lambda done, total: steps.append((done, total)))
    assert tuning["beats_most_popular"]
    assert steps[-1][0] == steps[-1][1] == tuning["trials"]  # the progress bar reaches its end

    def test_ndcg(name: str, params: dict[str, object]) -> float:
        return float(
            evaluate_configuration(dataset, Protocol.TEMPORAL, name, params).metrics["ndcg@10"]
        )

    chosen = test_ndcg("als", tuning["params"])
    popular = max(test_ndcg("most-popular", {}), test_ndcg("recent-popular", {"window_days": 7}))
    assert chosen > 1.1 * popular
    assert test_ndcg("als", SERVED_ALS_PARAMS) < popular  # why up does not serve the defaults
