"""infra/local/system-packages.sh, the first step of `make up`, `make test` and CI: on a machine
that lacks a binary it installs the package with apt-get as root, and otherwise prints the
command and stops; with every binary present it does nothing. apt-get is a stand-in here that
records its arguments (the real one would need the network and change the machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).parents[2] / "infra" / "local" / "system-packages.sh"
BINARIES = ("redis-server", "java", "mvn", "promtool", "chromium")


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A PATH of its own, readable by an unprivileged user: `id`, and a recording apt-get."""
    root = Path(tempfile.mkdtemp(prefix="recsys-packages-"))
    root.chmod(0o755)
    (root / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    apt = root / "apt-get"
    apt.write_text(f'#!/bin/bash\necho "$*" >> {root}/apt.log\n')
    apt.chmod(0o755)
    yield root
    shutil.rmtree(root)


def provide(bin_dir: Path, *names: str) -> None:
    for name in names:
        fake = bin_dir / name
        fake.write_text("#!/bin/bash\n")
        fake.chmod(0o755)


def run(bin_dir: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, "/bin/bash", str(SCRIPT)],
        env={"PATH": str(bin_dir), "HOME": str(bin_dir)},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def apt_calls(bin_dir: Path) -> list[str]:
    log = bin_dir / "apt.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.skipif(os.geteuid() != 0, reason="installing is what root does")
def test_as_root_a_missing_redis_server_is_installed_quietly(bin_dir: Path) -> None:
    provide(bin_dir, "java", "mvn", "promtool", "chromium")
    done = run(bin_dir)
    assert done.returncode == 0, done.stderr
    assert apt_calls(bin_dir) == [
        "update -qq",
        "install -y -qq --no-install-recommends redis-server",
    ]
    assert "installing system packages: redis-server" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the script as another user")
def test_without_root_it_prints_the_command_and_stops(bin_dir: Path) -> None:
    provide(bin_dir, "java", "promtool", "chromium")
    nobody = (
        shutil.which("setpriv") or "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    )
    done = run(bin_dir, *nobody)
    assert done.returncode == 1
    assert "sudo apt-get install -y --no-install-recommends redis-server maven" in done.stderr
    assert apt_calls(bin_dir) == []


def test_a_machine_with_everything_is_left_alone(bin_dir: Path) -> None:
    provide(bin_dir, *BINARIES)
    done = run(bin_dir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert apt_calls(bin_dir) == []
