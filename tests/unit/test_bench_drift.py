"""recsys bench drift: what its detection reads from the sampled drift reports."""

from __future__ import annotations

from typing import Any

import pytest

from recsys.bench.drift import detection

pytestmark = pytest.mark.unit


def sample(t_s: float, psi: dict[str, float | None], against: str = "training") -> dict[str, Any]:
    return {"t_s": t_s, "psi": psi, "compared_with": dict.fromkeys(psi, against)}


def test_detection_times_the_first_crossing_after_the_shift_and_flags_false_alarms() -> None:
    samples = [
        sample(10, {"event_scores": None}, "awaiting_reference"),
        sample(20, {"event_scores": 0.05, "item_genres": 0.3}, "live_reference"),
        sample(40, {"event_scores": 0.08, "item_genres": 0.1}, "live_reference"),
        sample(62, {"event_scores": 0.15, "item_genres": 0.1}, "live_reference"),
        sample(70, {"event_scores": 0.9, "item_genres": 0.1}, "live_reference"),
        sample(80, {"event_scores": 0.1, "item_genres": 0.1}, "live_reference"),
    ]
    found = detection(samples, shift_s=50, threshold=0.2)
    assert found["seconds_to_threshold"] == {"event_scores": 20}
    assert found["first_detection_s"] == 20
    assert found["max_psi_before_shift"] == {"event_scores": 0.08, "item_genres": 0.3}
    assert found["above_threshold_before_shift"] == ["item_genres"]
    assert found["reference_from_s"] == {"event_scores": 20, "item_genres": 20}


def test_no_crossing_is_no_detection() -> None:
    found = detection([sample(60, {"event_scores": 0.1})], shift_s=50, threshold=0.2)
    assert found["first_detection_s"] is None
    assert found["reference_from_s"] == {}
