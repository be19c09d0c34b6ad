"""The soak's pass criteria on synthetic samples (`recsys.bench.soak_report`)."""

from __future__ import annotations

from typing import Any

import pytest

from recsys.bench.soak_report import (
    evaluate,
    exactly_once,
    growth_percent_per_hour,
    markdown,
    memory_growth,
    plot,
)

pytestmark = pytest.mark.unit

INTERVAL = 5.0
WARMUP = 600.0
END = 3600.0
MB = 2**20


def samples(
    rss: dict[str, Any] | None = None,
    p99: Any = lambda t: 20.0,
    freshness: Any = lambda t: 150.0,
    five_xx_at: float | None = None,
) -> list[dict[str, Any]]:
    """A flat hour, one sample every INTERVAL s; `rss` maps a process to its RSS at time t."""
    rss = rss or {"api worker 10": lambda t: 200 * MB, "stream worker 20": lambda t: 150 * MB}
    out = []
    t = INTERVAL
    while t <= END:
        out.append(
            {
                "t_s": t,
                "rss_bytes": {label: int(f(t)) for label, f in rss.items()},
                "fds": {label: 30 for label in rss},
                "redis_used_memory": 50 * MB,
                "kafka_lag": 100,
                "requests": {
                    "sent": 1500,
                    "answered": 1500,
                    "5xx": 1 if five_xx_at is not None and t - INTERVAL < five_xx_at <= t else 0,
                    "failed": 0,
                },
                "latency_ms": {"p50": 5.0, "p99": p99(t)},
                "freshness_ms": {"n": 5, "timeouts": 0, "p50": 80.0, "p99": freshness(t)},
            }
        )
        t += INTERVAL
    return out


PUBLISHED = {"u1": 3, "u2": 5, "probe-1": 1}


def verdict(**kwargs: Any) -> dict[str, Any]:
    applied = kwargs.pop("applied", PUBLISHED)
    faults = kwargs.pop("faults", [])
    return evaluate(samples(**kwargs), faults, PUBLISHED, applied, WARMUP, INTERVAL)


def failed(result: dict[str, Any]) -> list[str]:
    return [row["criterion"] for row in result["criteria"] if not row["passed"]]


def test_growth_is_percent_of_the_starting_level_per_hour() -> None:
    t = [0.0, 1800.0, 3600.0]
    assert growth_percent_per_hour(t, [100.0, 102.0, 104.0]) == pytest.approx(4.0)
    assert growth_percent_per_hour([3600.0, 5400.0], [200.0, 205.0]) == pytest.approx(5.0)
    assert growth_percent_per_hour(t, [100.0, 100.0, 100.0]) == pytest.approx(0.0)


def test_growth_leaves_out_the_warm_up() -> None:
    # Doubles during the warm-up, flat after it.
    rss = {"api worker 10": lambda t: (100 + 100 * min(t, WARMUP) / WARMUP) * MB}
    growth = memory_growth(samples(rss), WARMUP, END)["api worker 10"]
    assert growth["judged"]
    assert growth["percent_per_hour"] == pytest.approx(0.0, abs=1e-6)


def test_flat_run_passes() -> None:
    result = verdict()
    assert failed(result) == []
    assert result["passed"]


def test_a_leak_fails() -> None:
    # 10 % per hour of its level after the warm-up.
    leaky = {"api worker 10": lambda t: 200 * MB * (1 + 0.1 * (t - WARMUP) / 3600)}
    result = verdict(rss=leaky)
    assert result["memory_growth"]["api worker 10"]["percent_per_hour"] == pytest.approx(10, 0.01)
    assert failed(result) == [result["criteria"][0]["criterion"]]


def test_a_slow_growth_under_the_limit_passes() -> None:
    slow = {"api worker 10": lambda t: 200 * MB * (1 + 0.03 * (t - WARMUP) / 3600)}
    assert verdict(rss=slow)["passed"]


def test_a_short_series_and_the_load_client_are_not_judged() -> None:
    rss = {
        "api worker 10": lambda t: 200 * MB,
        "load client 1": lambda t: 100 * MB * (1 + t / 600),  # grows, but is not the product
    }
    growth = memory_growth(samples(rss), WARMUP, END)
    assert not growth["load client 1"]["judged"]
    assert growth["load client 1"]["passed"]
    # A process started by a fault 10 minutes before the end: too short to extrapolate.
    late = [s for s in samples(rss) if s["t_s"] >= END - 600]
    short = memory_growth(late, WARMUP, END)["api worker 10"]
    assert not short["judged"]


def test_a_replacement_is_judged_after_its_own_warm_up() -> None:
    """A worker a fault started at 1800 s doubles while it warms up, then stays flat: its own
    start-up is left out, as the run's is; one that keeps growing after it still fails."""
    born = 1800.0

    def warming(t: float) -> float:
        return (100 + 100 * min(t - born, WARMUP) / WARMUP) * MB

    def leaking(t: float) -> float:
        return warming(t) * (1 + 0.2 * max(t - born - WARMUP, 0.0) / 3600)

    for rss, passes in ((warming, True), (leaking, False)):
        runs = samples({"api worker 10": lambda t: 200 * MB, "api worker 30": rss})
        for sample in runs:
            if sample["t_s"] < born:
                del sample["rss_bytes"]["api worker 30"]
        growth = memory_growth(runs, WARMUP, END)["api worker 30"]
        assert growth["judged"]
        assert growth["passed"] is passes, growth


def test_a_5xx_fails() -> None:
    result = verdict(five_xx_at=1200.0)
    assert result["request_failures"]["5xx"] == 1
    assert failed(result) == [result["criteria"][1]["criterion"]]


def test_a_5xx_during_a_fault_is_the_faults_not_the_runs() -> None:
    fault = {"fault": "kill -9 one API worker", "run": True, "at_s": 1190.0, "recovery_s": 5.0}
    result = verdict(five_xx_at=1200.0, faults=[fault])
    assert result["request_failures"]["5xx"] == 0
    assert result["request_failures"]["5xx_in_faults"] == 1
    assert result["passed"]


@pytest.mark.parametrize(
    ("applied", "lost", "doubled"),
    [({"u1": 3, "u2": 4, "probe-1": 1}, 1, 0), ({"u1": 4, "u2": 5, "probe-1": 1}, 0, 1)],
)
def test_a_lost_or_doubled_event_fails(applied: dict[str, int], lost: int, doubled: int) -> None:
    result = verdict(applied=applied)
    once = result["exactly_once"]
    assert (once["lost"], once["doubled"]) == (lost, doubled)
    assert failed(result) == [result["criteria"][2]["criterion"]]


def test_a_user_never_applied_counts_as_lost() -> None:
    once = exactly_once({"u1": 2, "u2": 1}, {"u1": 2})
    assert (once["lost"], once["users_lost"], once["doubled"]) == (1, 1, 0)


def test_a_rising_p99_fails() -> None:
    result = verdict(p99=lambda t: 20.0 + 40.0 * t / END)  # 20 -> 60 ms over the hour
    assert result["trends"]["latency_p99_ms"]["rising"]
    assert failed(result) == [result["criteria"][3]["criterion"]]


def test_rising_freshness_fails_but_noise_and_a_small_rise_do_not() -> None:
    rising = verdict(freshness=lambda t: 100.0 + 300.0 * t / END)
    assert failed(rising) == [rising["criteria"][4]["criterion"]]
    # Spiky windows (every tenth at 10x) and a rise under the floor both pass.
    assert verdict(p99=lambda t: 200.0 if int(t / INTERVAL) % 10 == 0 else 20.0)["passed"]
    assert verdict(p99=lambda t: 2.0 + 3.0 * t / END)["passed"]


def soak_result(
    data: list[dict[str, Any]], faults: list[dict[str, Any]], found: dict[str, Any]
) -> dict[str, Any]:
    """What `recsys.bench.soak.run` returns around its samples, faults and verdict."""
    return {
        "config": {"interval_s": INTERVAL, "api_workers": 2, "request_rate": 300,
                   "event_rate": 1000, "users": 5000, "probe_interval_s": 1.0},
        "rates": {"requests_per_s": 299.0, "events_per_s": 998.0, "probes": 3600,
                  "api_saturation": 1330, "stream_saturation": 9500},
        "dataset": "synthetic", "seconds": END, "warmup_s": WARMUP,
        "redis_memory_mb": {"first": 40.0, "last": 50.0},
        "samples": data, "faults": faults, "verdict": found,
    }  # fmt: skip


def test_report_and_plot(tmp_path: Any) -> None:
    data = samples()
    faults = [
        {"fault": "kill -9 one API worker", "run": True, "at_s": 1200.0, "recovery_s": 3.0,
         "requests": {"sent": 3000, "5xx": 0, "failed": 4}, "lost": 0, "doubled": 0,
         "detail": "pid 10 killed"},
        {"fault": "stop Kafka for 10 s", "run": False, "detail": "not implemented in the soak"},
    ]  # fmt: skip
    result = soak_result(data, faults, evaluate(data, faults, PUBLISHED, PUBLISHED, WARMUP,
                                                INTERVAL))  # fmt: skip
    text = markdown(result, "soak.png")
    assert "**PASSED**" in text
    assert "| stop Kafka for 10 s | not run |" in text
    assert "| kill -9 one API worker | 1200.0 | 3.0 | 3,000 / 0 / 4 | 0 / 0 |" in text
    plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("per_user", "duplicate_rows", "passes"),
    [
        (PUBLISHED, 0, True),
        ({"u1": 3, "u2": 4, "probe-1": 1}, 0, False),  # one event never archived
        ({"u1": 3, "u2": 5}, 0, False),  # a user never archived
        (PUBLISHED, 2, False),  # two rows repeat an event id
    ],
)
def test_the_archive_must_hold_every_published_event_once(
    per_user: dict[str, int], duplicate_rows: int, passes: bool
) -> None:
    archived = {"per_user": per_user, "duplicate_rows": duplicate_rows}
    result = evaluate(samples(), [], PUBLISHED, PUBLISHED, WARMUP, INTERVAL, archived)
    archive_failed = "every published event archived exactly once (per user)" in failed(result)
    assert archive_failed is not passes
    assert result["passed"] is passes
    assert result["archive"]["duplicate_rows"] == duplicate_rows


def test_without_an_archive_check_there_is_no_archive_criterion() -> None:
    result = verdict()
    assert result["archive"] is None
    assert not any("archived" in row["criterion"] for row in result["criteria"])


def test_samples_taken_while_redis_or_the_broker_was_down_still_plot(tmp_path: Any) -> None:
    data = samples()
    for sample in data[100:103]:
        sample["redis_used_memory"] = sample["kafka_lag"] = None
    archived = {"per_user": PUBLISHED, "duplicate_rows": 0}
    result = soak_result(
        data, [], evaluate(data, [], PUBLISHED, PUBLISHED, WARMUP, INTERVAL, archived)
    )
    assert "The archive (its Delta table" in markdown(result, "soak.png")
    plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 10_000
