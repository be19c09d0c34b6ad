"""Our services as subprocesses (the command, benchmarks and tests) and bounded waits for
their effects."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import httpx

from core.clients import redis_unavailable
from core.settings import Settings
from infra.local.process import free_port


class ChildProcess:
    """A command run as a child in a session of its own (so that a stop also reaches the
    processes it starts), its output appended to a log file; every wait is bounded.

    The one way the command, the benchmarks and the tests run our services as subprocesses.
    """

    def __init__(self, argv: list[str], log_file: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log_file = log_file
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL to the whole session: no shutdown hook runs, nothing is flushed."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the session, then SIGKILL if it has not exited within `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class WorkerProcess(ChildProcess):
    """`recsys worker` on a free web port, with its own log file."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        group_id: str,
        session_timeout_s: float = 6.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.web_port = free_port()
        self.session_timeout_s = session_timeout_s
        super().__init__(
            [
                sys.executable, "-m", "recsys", "worker",
                "--web-port", str(self.web_port),
                "--group-id", group_id,
                "--session-timeout", str(session_timeout_s),
            ],
            log_dir / f"worker-{group_id}-{self.web_port}.log",
            {
                **os.environ,
                "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "RECSYS_REDIS_URL": settings.redis_url,
                "RECSYS_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
                "RECSYS_STATE_DIR": str(settings.state_dir),
                "RECSYS_LOG_LEVEL": "WARNING",
                **(env or {}),
            },
        )  # fmt: skip

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2).text

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """GET /ready: 200 once consuming (partitions assigned, apply process running)."""
        response = httpx.get(f"http://127.0.0.1:{self.web_port}/ready", timeout=2)
        return response.status_code, response.json()


class ArchiverProcess(ChildProcess):
    """`recsys archive run` into `settings.archive_location`, /metrics on a free port."""

    def __init__(
        self, settings: Settings, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.metrics_port = free_port()
        super().__init__(
            [sys.executable, "-m", "recsys", "archive", "run",
             "--metrics-port", str(self.metrics_port)],
            log_dir / f"archiver-{self.metrics_port}.log",
            {
                **os.environ,
                "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "RECSYS_STATE_DIR": str(settings.state_dir),
                "RECSYS_ARCHIVE_URI": settings.archive_location,
                "RECSYS_ARCHIVE_GROUP_ID": settings.archive_group_id,
                "RECSYS_ARCHIVE_BATCH_SECONDS": str(settings.archive_batch_seconds),
                "RECSYS_LOG_LEVEL": "WARNING",
                **(env or {}),
            },
        )  # fmt: skip

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text

    def gauge(self, name: str) -> float:
        """One unlabelled series of its /metrics ("recsys_archive_lag_seconds")."""
        for line in self.metrics().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise ValueError(f"the archiver's /metrics has no {name}")

    def lag_s(self) -> float:
        """The age of the oldest event of its last commit; while a write keeps failing, the
        age of the oldest event waiting for it."""
        return self.gauge("recsys_archive_lag_seconds")

    def write_errors(self) -> float:
        return self.gauge("recsys_archive_write_errors_total")


class RetrainerProcess(ChildProcess):
    """`recsys retrain --every` on the settings' archive and Redis, /metrics on a free port."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        every: str = "1h",
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_port = free_port()
        super().__init__(
            [sys.executable, "-m", "recsys", "retrain", "--every", every,
             "--metrics-port", str(self.metrics_port)],
            log_dir / f"retrainer-{self.metrics_port}.log",
            {
                **os.environ,
                "RECSYS_REDIS_URL": settings.redis_url,
                "RECSYS_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
                "RECSYS_STATE_DIR": str(settings.state_dir),
                "RECSYS_ARCHIVE_URI": settings.archive_location,
                "RECSYS_LOG_LEVEL": "INFO",
                **(env or {}),
            },
        )  # fmt: skip

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    worker: WorkerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception as exc:
            if not redis_unavailable(exc):
                raise
            # the check's own connection went with a restarted Redis: ask again
        await asyncio.sleep(0.2)
    detail = f"\nworker log:\n{worker.log_tail()}" if worker else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
