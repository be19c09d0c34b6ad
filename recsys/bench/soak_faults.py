"""The faults `recsys bench soak --faults` injects into its running stack, one after the other at
even spacing over the measured period, each returning its row of the report's fault section:
the fault, when it struck (`at_s`, seconds since the load started), when the stack had recovered
(`recovery_s`, None if it did not within the bound), and what happened in words (`detail`).
Events lost or doubled are the end-of-run check's (`recsys.bench.soak`), which covers them all.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from infra.local.process import TCP_ESTABLISHED, sockets_by_process
from recsys.processes import WorkerProcess

if TYPE_CHECKING:
    from recsys.bench.soak import SoakConfig, Stack

KAFKA_DOWN_S = 10.0  # the figure
REDIS_DOWN_S = 5.0
ARCHIVE_READ_ONLY_S = 30.0
T = TypeVar("T")


FAULTS = (
    "kill -9 one API worker",
    "kill -9 the stream worker, start a new one",
    "stop Kafka for 10 s",
    "restart Redis (AOF on)",
    "archive unwritable",
)
# Events the (new) worker skipped as already applied: by applied offset or by event id.
_SKIPPED_SERIES = re.compile(
    r'^recsys_stream_dedup_hits_total\{reason="(\w+)"\} (\S+)$', re.MULTILINE
)


def _row(n: int, at: float, recovered: float | None, detail: str, **figures: Any) -> dict[str, Any]:
    """Fault `n`'s row: when it struck, when the stack had recovered (None: not within the
    bound), its own figures and what happened in words."""
    return {"fault": FAULTS[n], "run": True, "at_s": at, "recovery_s": recovered, **figures,
            "detail": detail}  # fmt: skip


def wait_for(check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, httpx.HTTPError, ValueError):
            pass
        time.sleep(every_s)
    return False


def kill_api_worker(stack: Stack, clock: Callable[[], float]) -> dict[str, Any]:
    """SIGKILL to one uvicorn worker; recovered once the supervisor's replacement holds a
    client connection (it serves)."""
    before = stack.api_workers()
    victim = before[0]
    at = clock()
    os.kill(victim, signal.SIGKILL)

    def replacement() -> list[int]:
        return [p for p in stack.api_workers() if p not in before]

    replaced = wait_for(lambda: bool(replacement()), 60)
    new = replacement()
    serving = replaced and wait_for(
        lambda: sockets_by_process(new, stack.server.port, TCP_ESTABLISHED).get(new[0], 0) > 0, 60
    )
    recovered = clock() - at if serving else None
    return _row(
        0,
        at,
        recovered,
        detail=f"pid {victim} killed; "
        + (
            f"replaced by pid {new[0]}, serving after {recovered:.1f} s"
            if serving
            else "no replacement serving within 60 s"
        ),
    )


def kill_stream_worker(
    stack: Stack, clock: Callable[[], float], lag: Callable[[], int], event_rate: int
) -> dict[str, Any]:
    """SIGKILL to the worker's session (its apply process too), a new worker at once in the same
    group; recovered once the lag is back to its level before the kill (or 2 s of events)."""
    lag_before = lag()
    at = clock()
    stack.worker.kill()
    worker = WorkerProcess(stack.settings, stack.work_dir, stack.group_id, env=stack.env).start()
    stack.worker = worker
    ready = wait_for(lambda: worker.readiness()[0] == 200, 120, 0.5)
    ready_s = clock() - at
    caught_up = ready and wait_for(lambda: lag() <= max(lag_before, 2 * event_rate), 240, 0.5)
    recovered = clock() - at if caught_up else None
    skipped = 0
    with suppress(OSError, httpx.HTTPError):
        skipped = int(sum(float(v) for _, v in _SKIPPED_SERIES.findall(worker.metrics())))
    return _row(
        1,
        at,
        recovered,
        ready_s=ready_s if ready else None,
        lag_before=lag_before,
        skipped_as_applied=skipped,
        detail=f"lag {lag_before:,} before; new worker ready after {ready_s:.1f} s, "
        + (
            f"lag back after {recovered:.1f} s"
            if recovered is not None
            else "lag not back within 240 s"
        )
        + f"; {skipped:,} redelivered events skipped as already applied",
    )


def maybe(read: Callable[[], T]) -> T | None:
    """`read()`, or None while a fault has taken away what it reads (the broker, Redis)."""
    try:
        return read()
    except Exception:
        return None


def _lag_back(lag: Callable[[], int], lag_before: int | None, event_rate: int) -> bool:
    """The worker's lag back to its level before a fault (or 2 s of events), within 240 s."""
    limit = max(lag_before or 0, 2 * event_rate)

    def back() -> bool:
        now = maybe(lag)
        return now is not None and now <= limit

    return wait_for(back, 240, 0.5)


def stop_kafka(
    stack: Stack, clock: Callable[[], float], lag: Callable[[], int], event_rate: int
) -> dict[str, Any]:
    """The broker stopped as an operator stops it (SIGTERM, a clean shutdown) and started again
    KAFKA_DOWN_S later, while the simulator, the API's impressions and the probes publish;
    recovered once the worker's lag is back to its level before."""
    kafka = stack.services.kafka
    lag_before = maybe(lag)
    at = clock()
    kafka.stop()
    stopped_s = clock() - at
    time.sleep(KAFKA_DOWN_S)
    kafka.start(timeout_s=180)
    stack.track("kafka", kafka.process.pid())
    back_s = clock() - at
    recovered = clock() - at if _lag_back(lag, lag_before, event_rate) else None
    return _row(
        2,
        at,
        recovered,
        lag_before=lag_before,
        detail=f"stopped in {stopped_s:.1f} s, down {KAFKA_DOWN_S:g} s, serving again after "
        f"{back_s:.1f} s; "
        + (f"lag back after {recovered:.1f} s" if recovered is not None else "lag not back"),
    )


def restart_redis(
    stack: Stack,
    clock: Callable[[], float],
    lag: Callable[[], int],
    event_rate: int,
    active_version: Callable[[], str | None],
) -> dict[str, Any]:
    """Redis stopped and started again REDIS_DOWN_S later, replaying its append-only file; the
    API answers from its fallbacks meanwhile and the worker retries. Recovered once the worker's
    lag is back; the row says whether the active model version survived, and the end-of-run
    check whether every user's state did (a lost counter reads as lost events)."""
    redis = stack.services.redis
    version_before = maybe(active_version)
    lag_before = maybe(lag)
    at = clock()
    redis.stop()
    time.sleep(REDIS_DOWN_S)
    redis.start(timeout_s=120)
    stack.track("redis", redis.process.pid())
    back_s = clock() - at
    recovered = clock() - at if _lag_back(lag, lag_before, event_rate) else None
    version_after = maybe(active_version)
    kept = version_after is not None and version_after == version_before
    return _row(
        3,
        at,
        recovered,
        model_version_kept=kept,
        detail=f"down {REDIS_DOWN_S:g} s, serving again after {back_s:.1f} s; active model "
        + ("version kept" if kept else f"version {version_before} -> {version_after}")
        + "; "
        + (f"lag back after {recovered:.1f} s" if recovered is not None else "lag not back"),
    )


def archive_read_only(stack: Stack, clock: Callable[[], float]) -> dict[str, Any]:
    """The archive's directory read-only for ARCHIVE_READ_ONLY_S (`recsys.faults.read_only`):
    the archiver's commits fail and are retried while its lag grows; recovered once its lag is
    back under its level before plus 5 s. The end-of-run archive check says whether anything
    was lost or written twice."""
    from recsys.faults import read_only

    archiver = stack.archiver
    lag_before = maybe(archiver.lag_s) or 0.0
    errors_before = maybe(archiver.write_errors) or 0.0
    at = clock()
    with read_only(Path(stack.settings.archive_location)):
        time.sleep(ARCHIVE_READ_ONLY_S)
        lag_during = maybe(archiver.lag_s)
        errors = (maybe(archiver.write_errors) or 0.0) - errors_before
    back = wait_for(lambda: archiver.lag_s() <= lag_before + 5, 240, 1.0)
    recovered = clock() - at if back else None
    return _row(
        4,
        at,
        recovered,
        archive_lag_s={"before": lag_before, "read_only": lag_during},
        write_errors=errors,
        detail=f"read-only for {ARCHIVE_READ_ONLY_S:g} s: {errors:.0f} failed commits, "
        f"archive lag {lag_before:.1f} -> {_fmt_s(lag_during)} s; "
        + (f"lag back after {recovered:.1f} s" if recovered is not None else "lag not back"),
    )


def _fmt_s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}"


def run_faults(
    stack: Stack,
    config: SoakConfig,
    clock: Callable[[], float],
    lag: Callable[[], int],
    active_version: Callable[[], str | None],
    faults: list[dict[str, Any]],
) -> None:
    """Each fault at its time (evenly over the measured period), one after the other."""
    plan: list[Callable[[], dict[str, Any]]] = [
        lambda: kill_api_worker(stack, clock),
        lambda: kill_stream_worker(stack, clock, lag, config.event_rate),
        lambda: stop_kafka(stack, clock, lag, config.event_rate),
        lambda: restart_redis(stack, clock, lag, config.event_rate, active_version),
        lambda: archive_read_only(stack, clock),
    ]
    measured = config.seconds - config.warmup_s
    for n, inject in enumerate(plan):
        due = config.warmup_s + measured * (n + 1) / (len(plan) + 1)
        time.sleep(max(0.0, due - clock()))
        try:
            faults.append(inject())
        except Exception as exc:  # a fault that could not be injected is a row, not a crash
            faults.append({"fault": FAULTS[n], "run": False, "detail": f"failed: {exc!r}"})
