"""Experiments' pure parts: sticky assignment, the split over many users, the two-proportion
test against a case worked by hand, and the sample-ratio-mismatch check."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from core.experiments import (
    Arm,
    Experiment,
    ExperimentError,
    Rate,
    assign,
    compare,
    experiment_from_json,
    sample_ratio_mismatch,
)

pytestmark = pytest.mark.unit

AB = Experiment("homepage", (Arm("control", 0.5), Arm("diverse", 0.3), Arm("random", 0.2)))


def test_assignment_is_sticky_and_splits_as_configured() -> None:
    users = [f"u{n}" for n in range(100_000)]
    arms = [assign(AB, user).name for user in users]
    assert arms[:500] == [assign(AB, user).name for user in users[:500]]  # sticky
    counts = Counter(arms)
    for arm in AB.arms:
        assert counts[arm.name] / len(users) == pytest.approx(arm.share, abs=0.01)
    assert (
        sample_ratio_mismatch([counts[a.name] for a in AB.arms], [a.share for a in AB.arms]) > 1e-3
    )


def test_experiments_assign_independently_and_the_salt_reshuffles() -> None:
    other = Experiment("search", (Arm("a", 0.5), Arm("b", 0.5)))
    resalted = Experiment("homepage", AB.arms, salt="2026-12")
    users = [f"u{n}" for n in range(20_000)]
    joint = Counter((assign(AB, u).name, assign(other, u).name) for u in users)
    # Within each arm of one experiment, the other still splits half and half.
    for arm in AB.arms:
        in_arm = joint[arm.name, "a"] + joint[arm.name, "b"]
        assert joint[arm.name, "a"] / in_arm == pytest.approx(0.5, abs=0.03)
    moved = sum(assign(AB, u).name != assign(resalted, u).name for u in users)
    assert moved > 0.4 * len(users)


def test_inconsistent_definitions_are_refused_by_name() -> None:
    with pytest.raises(ExperimentError, match=r"sum to 0\.9"):
        Experiment("x", (Arm("a", 0.5), Arm("b", 0.4)))
    with pytest.raises(ExperimentError, match="repeat"):
        Experiment("x", (Arm("a", 0.5), Arm("a", 0.5)))
    with pytest.raises(ExperimentError, match="no arms"):
        Experiment("x", ())


def test_two_proportions_against_a_case_worked_by_hand() -> None:
    # 250/1000 against 200/1000: pooled p = 0.225, se = sqrt(0.225 * 0.775 * 2/1000) = 0.018675,
    # z = 0.05 / 0.018675 = 2.6774, two-sided p = 2 * (1 - Phi(2.6774)) = 0.00742.
    result = compare(Rate(250, 1000), Rate(200, 1000))
    assert result.difference == pytest.approx(0.05)
    assert result.p_value == pytest.approx(0.00742, abs=5e-5)
    # Unpooled se = sqrt(.25*.75/1000 + .2*.8/1000) = 0.018641: 0.05 +- 1.96 * that.
    assert result.interval == pytest.approx((0.05 - 0.036536, 0.05 + 0.036536), abs=1e-5)
    same = compare(Rate(200, 1000), Rate(200, 1000))
    assert same.p_value == pytest.approx(1.0)
    assert math.isnan(compare(Rate(0, 0), Rate(1, 10)).p_value)


def test_wilson_interval_stays_inside_0_and_1() -> None:
    low, high = Rate(0, 50).interval()
    assert low == 0.0
    assert 0.05 < high < 0.1  # Wilson's upper bound for 0/50 is 0.0714
    low, high = Rate(50, 100).interval()
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_a_skewed_split_is_a_sample_ratio_mismatch() -> None:
    # 5,300 against 5,000 for a 50/50 split: chi2 = 2 * 150**2 / 5150 = 8.738, p = 0.00312.
    assert sample_ratio_mismatch([5300, 5000], [0.5, 0.5]) == pytest.approx(0.00312, abs=2e-5)
    assert sample_ratio_mismatch([5030, 5000], [0.5, 0.5]) > 0.5


def test_a_configured_experiment_is_read_and_a_bad_one_says_what_is_wrong() -> None:
    text = (
        '{"id": "h", "arms": [{"name": "a", "share": 0.5},'
        ' {"name": "b", "share": 0.5, "params": {"diversity": 0.3}}]}'
    )
    assert experiment_from_json(text).arm("b").params == {"diversity": 0.3}
    whole = '{"id": "h", "arms": [{"name": "a", "share": 1, "params": {"diversity": 1}}]}'
    assert experiment_from_json(whole).arm("a").params == {"diversity": 1}
    with pytest.raises(ExperimentError, match="unknown parameter 'temperature'"):
        experiment_from_json(
            '{"id": "h", "arms": [{"name": "a", "share": 1, "params": {"temperature": 1}}]}'
        )
    with pytest.raises(ExperimentError, match="holdout must be a bool"):
        experiment_from_json(
            '{"id": "h", "arms": [{"name": "a", "share": 1, "params": {"holdout": 1}}]}'
        )
    with pytest.raises(ExperimentError, match=r"diversity must be within \[0, 1\]"):
        experiment_from_json(
            '{"id": "h", "arms": [{"name": "a", "share": 1, "params": {"diversity": 2.0}}]}'
        )
    with pytest.raises(ExperimentError, match="an experiment is JSON like"):
        experiment_from_json('{"arms": []}')
