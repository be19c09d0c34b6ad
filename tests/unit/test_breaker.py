from __future__ import annotations

import pytest

from api.breaker import BreakerState, Budget, CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(b: CircuitBreaker) -> BreakerState:
    # A call, not the property: mypy would otherwise narrow `b.state` across the steps.
    return b.state


def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("redis", failure_threshold=3, reset_after_s=5.0, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert state(b) is BreakerState.CLOSED
    assert b.allow()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    assert not b.allow()


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # a second caller waits for the trial's outcome
    b.record_success()
    assert state(b) is BreakerState.CLOSED
    assert b.allow()
    assert b.allow()


def test_failed_trial_opens_for_another_period() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_budget_cuts_call_timeouts_to_what_is_left() -> None:
    clock = FakeClock()
    budget = Budget(0.1, clock=clock)
    assert budget.timeout(0.025) == pytest.approx(0.025)
    clock.now += 0.09
    assert budget.timeout(0.025) == pytest.approx(0.01)
    clock.now += 1
    assert budget.remaining() == 0.0
    assert budget.timeout(0.025) == 0.0
