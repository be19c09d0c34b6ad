"""`recsys services up|status|down` from a shell: real processes, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import Settings
from infra.local.process import free_port, pid_alive, port_is_open
from infra.local.services import LocalServices

pytestmark = pytest.mark.integration

RECSYS = [sys.executable, "-m", "recsys"]


def test_services_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "RECSYS_STATE_DIR": str(tmp_path / "state"),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "RECSYS_KAFKA_CONTROLLER_PORT": str(controller_port),
        "RECSYS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RECSYS, "services", *args], env=env, capture_output=True, text=True, timeout=180
        )

    services_dir = tmp_path / "state" / "services"
    try:
        up = run("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"RECSYS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}" in up.stdout
        pid_files = [
            (services_dir / n / f"{n}.pid").read_text().split() for n in ("kafka", "redis")
        ]
        pids = [int(pid) for pid, _ in pid_files]
        # The address each was started on: what `up` compares with after a port change.
        assert [address for _, address in pid_files] == [
            f"127.0.0.1:{kafka_port}",
            f"127.0.0.1:{redis_port}",
        ]
        assert all(pid_alive(pid) for pid in pids)

        again = run("up")  # harmless the second time
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already running") == 2

        status = run("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("yes") == 2
    finally:
        down = run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "kafka: stopped" in down.stdout
    assert not any(pid_alive(pid) for pid in pids)
    assert run("status").returncode == 1  # nothing healthy any more

    # Re-using the formatted data dir works: a second life of the same services.
    try:
        assert run("up").returncode == 0
    finally:
        assert run("down").returncode == 0


def test_services_up_refuses_a_port_taken_by_someone_else(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **os.environ,
            "RECSYS_STATE_DIR": str(tmp_path / "state"),
            "RECSYS_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        }
        result = subprocess.run(
            [*RECSYS, "services", "up"], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"Port {port}" in result.stdout
    assert "RECSYS_REDIS_URL" in result.stdout


def test_up_after_a_port_change_names_the_port_in_use(tmp_path: Path) -> None:
    """Redis runs on port A; the settings now say B. `up` must not claim it is running (on B,
    nothing listens): it fails naming A; `status` shows A; `down` stops it."""
    old_port, new_port = free_port(), free_port()
    state_dir = tmp_path / "state"
    env = {
        **os.environ,
        "RECSYS_STATE_DIR": str(state_dir),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "RECSYS_KAFKA_CONTROLLER_PORT": str(free_port()),
        "RECSYS_REDIS_URL": f"redis://127.0.0.1:{new_port}/0",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RECSYS, "services", *args], env=env, capture_output=True, text=True, timeout=60
        )

    # What `recsys services up` did earlier with RECSYS_REDIS_URL on the old port (Redis only:
    # it is started first and takes a fraction of a second).
    old = LocalServices.from_settings(
        Settings(state_dir=state_dir, redis_url=f"redis://127.0.0.1:{old_port}/0")
    )
    assert old.redis.start()
    pid = old.redis.process.pid()
    assert pid is not None
    try:
        up = run("up")
        assert up.returncode == 1, up.stdout + up.stderr
        assert f"already runs on 127.0.0.1:{old_port}" in up.stdout
        assert "recsys services down" in up.stdout
        assert f"RECSYS_REDIS_URL=redis://127.0.0.1:{new_port}" not in up.stdout  # no exports
        assert not port_is_open(new_port)
        assert old.kafka.process.pid() is None  # it stopped at the first error

        status = run("status")
        assert status.returncode == 1, status.stdout
        assert f"redis://127.0.0.1:{old_port}/0" in status.stdout
        warning = " ".join(status.stdout.split())  # rich wraps lines at 80 columns
        assert f"redis runs on redis://127.0.0.1:{old_port}/0" in warning
        assert f"settings point at redis://127.0.0.1:{new_port}/0" in warning
    finally:
        down = run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "redis: stopped" in down.stdout
    assert not pid_alive(pid)
    assert not old.redis.process.pid_file.exists()
    assert not port_is_open(old_port)
