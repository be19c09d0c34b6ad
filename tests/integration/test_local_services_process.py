"""A server that never becomes ready is stopped, not left running with its pid file."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.local.process import ManagedProcess, ServiceError, pid_alive

pytestmark = pytest.mark.integration

SLEEPER = "import time; time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


@pytest.mark.parametrize("code", [SLEEPER, STUBBORN], ids=["obeys-sigterm", "ignores-sigterm"])
def test_a_server_that_never_becomes_ready_is_stopped(tmp_path: Path, code: str) -> None:
    marker = f"recsys-test-{uuid.uuid4().hex}"  # an argument the process never reads
    process = ManagedProcess(
        name="Never-ready",
        pid_file=tmp_path / "server.pid",
        log_file=tmp_path / "server.log",
        marker=marker,
        address="127.0.0.1:1",
    )
    pid = process.start([sys.executable, "-c", code, marker], cwd=tmp_path)
    try:
        time.sleep(0.3)  # let the stubborn one install its SIGTERM handler first
        started = time.monotonic()
        with pytest.raises(ServiceError) as error:
            process.wait_ready(lambda: False, timeout_s=0.5, stop_timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert not pid_alive(pid)
        assert not process.pid_file.exists()
        message = str(error.value)
        assert "did not become ready" in message
        assert "was stopped" in message
        assert str(process.log_file) in message
    finally:
        if pid_alive(pid):  # only when the assertions above failed
            process.stop(timeout_s=1.0)
