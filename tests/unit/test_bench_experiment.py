"""`recsys bench experiment`'s pure parts: when two arms count as separated."""

from __future__ import annotations

from typing import Any

import pytest

from core.experiments import Rate, compare
from recsys.bench.experiment import separation

pytestmark = pytest.mark.unit


def bucket(control: tuple[int, int], other: tuple[int, int]) -> dict[str, Any]:
    def counts(clicked_shown: tuple[int, int]) -> dict[str, int]:
        return {"clicked_impressions": clicked_shown[0], "impressions": clicked_shown[1]}

    return {"arms": {"model": counts(control), "random": counts(other)}}


def test_the_arms_separate_from_the_first_bucket_after_which_p_stays_below() -> None:
    buckets = [
        bucket((30, 100), (20, 100)),  # too few to tell
        bucket((30, 100), (10, 100)),  # below 0.01 for a first time...
        bucket((0, 100), (12, 100)),  # ...back above...
        bucket((60, 200), (10, 200)),  # ...and below for good
        bucket((30, 100), (10, 100)),
    ]
    found = separation(buckets, "random", "model")
    ps = [point["p_value"] for point in found["curve"]]
    assert ps[0] > 0.01
    assert ps[1] < 0.01
    assert ps[2] > 0.01
    assert ps[3] < 0.01
    assert ps[4] < 0.01
    assert found["separated_at_impressions"] == 1000  # 500 of each arm after the 4th bucket
    assert ps[-1] == compare(Rate(62, 600), Rate(150, 600)).p_value


def test_arms_that_never_separate_say_so() -> None:
    buckets = [bucket((10, 100), (11, 100)) for _ in range(5)]
    assert separation(buckets, "random", "model")["separated_at_impressions"] is None
