"""Run `recsys worker` as a subprocess (tests and benchmarks) and wait for its effects."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError

from infra.local.process import free_port
from recsys.settings import Settings


class WorkerProcess:
    """One worker process with its own log file; bounded waits everywhere."""

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
        self.log_file = log_dir / f"worker-{group_id}-{self.web_port}.log"
        self.env = {
            **os.environ,
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "RECSYS_REDIS_URL": settings.redis_url,
            "RECSYS_STATE_DIR": str(settings.state_dir),
            "RECSYS_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "recsys", "worker",
                    "--web-port", str(self.web_port),
                    "--group-id", self.group_id,
                    "--session-timeout", str(self.session_timeout_s),
                ],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2).text

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """GET /ready: 200 once consuming (partitions assigned, apply process running)."""
        response = httpx.get(f"http://127.0.0.1:{self.web_port}/ready", timeout=2)
        return response.status_code, response.json()

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed or committed."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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
        except (RedisError, OSError):
            pass  # the check's own connection went with a restarted Redis: ask again
        await asyncio.sleep(0.2)
    detail = f"\nworker log:\n{worker.log_tail()}" if worker else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
