"""What a pid file records and how a stop treats a process that is already gone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.local import process as process_module
from infra.local.process import ManagedProcess, Running, ServiceError

pytestmark = pytest.mark.unit

# Above the largest pid Linux can hand out (PID_MAX_LIMIT = 2**22): no such process exists.
NO_SUCH_PID = 2**22 + 1


def managed(tmp_path: Path, address: str | None = "127.0.0.1:6390") -> ManagedProcess:
    return ManagedProcess(
        name="Redis",
        pid_file=tmp_path / "redis.pid",
        log_file=tmp_path / "redis.log",
        marker="",  # in every command line: the pid alone decides
        address=address,
    )


def test_the_pid_file_gives_the_pid_and_the_address_it_was_started_on(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.pid_file.write_text(f"{os.getpid()}\n127.0.0.1:6391\n")
    assert process.running() == Running(os.getpid(), "127.0.0.1:6391")
    process.pid_file.write_text(f"{os.getpid()}\n")  # written before addresses were recorded
    assert process.running() == Running(os.getpid(), None)


def test_running_on_the_configured_address_is_already_running(tmp_path: Path) -> None:
    process = managed(tmp_path)
    assert not process.already_running(lambda address: address)
    process.pid_file.write_text(f"{os.getpid()}\n127.0.0.1:6390\n")
    assert process.already_running(lambda address: address)


def test_running_on_another_address_is_an_error_naming_it(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.pid_file.write_text(f"{os.getpid()}\n127.0.0.1:6391\n")
    with pytest.raises(ServiceError) as error:
        process.already_running(lambda address: f"RECSYS_REDIS_URL=redis://{address}/0")
    message = str(error.value)
    assert "already runs on 127.0.0.1:6391" in message
    assert "configured 127.0.0.1:6390" in message
    assert "recsys services down" in message
    assert "RECSYS_REDIS_URL=redis://127.0.0.1:6391/0" in message
    assert process.pid_file.exists()  # nothing was stopped


def test_a_stale_pid_file_is_removed(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.pid_file.write_text(f"{NO_SUCH_PID}\n127.0.0.1:6390\n")
    assert process.running() is None
    assert not process.pid_file.exists()
    assert not process.stop()


def test_a_process_gone_between_the_check_and_the_signal_counts_as_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pid check sees it alive; by the time of os.kill it has exited (ProcessLookupError).
    monkeypatch.setattr(process_module, "pid_alive", lambda pid: True)
    process = managed(tmp_path)
    process.pid_file.write_text(f"{NO_SUCH_PID}\n127.0.0.1:6390\n")
    assert process.stop(timeout_s=0.2)
    assert not process.pid_file.exists()


def test_a_port_run_keeps_out_of_the_ephemeral_range_when_there_is_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_module, "ephemeral_port_range", lambda: (32_768, 60_999))
    monkeypatch.setattr(process_module, "port_is_open", lambda port: False)
    monkeypatch.setattr(process_module, "_bindable", lambda port: True)
    for _ in range(50):
        first = process_module.free_port_run(3, also_at=10_000)
        ports = [first, first + 2, first + 10_000, first + 10_002]
        assert all(port < 32_768 for port in ports), ports


def test_a_port_run_skips_ports_in_use_and_falls_back_to_any_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_module, "ephemeral_port_range", lambda: (1_024, 65_535))
    monkeypatch.setattr(process_module, "port_is_open", lambda port: port % 2 == 0)
    monkeypatch.setattr(process_module, "_bindable", lambda port: True)
    first = process_module.free_port_run(1)
    assert first % 2 == 1
    assert 20_000 <= first <= 65_535
