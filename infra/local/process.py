"""A local server process owned through a pid file: start detached, find again, stop cleanly.

`recsys services down` must stop only what `recsys services up` started, even from another
shell, so ownership is recorded on disk (pid plus a marker that must appear in the process's
command line, which guards against a recycled pid). The pid file's second line is the address
the process was started on: the pid file's place does not depend on the port, so without it a
changed port would go unnoticed and `up` would print settings where nothing listens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service cannot be installed, started or reached; the message says what to do."""


def require_binary(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"`{name}` was not found on PATH. Install it: {install_hint}")
    return path


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A free port on 127.0.0.1, outside the ephemeral range (`free_port_run` says why)."""
    return free_port_run(1)


def free_port_run(count: int, also_at: int = 0, attempts: int = 200) -> int:
    """The first of `count` consecutive free ports on 127.0.0.1 (and, with `also_at`, the same
    ports shifted by it: a Redis Cluster node also listens on its port + 10000).

    Outside the kernel's ephemeral range where there is room: a node restarted in a test must
    get its ports back, and a port in that range may meanwhile be handed to any outgoing
    connection (a CI run lost a cluster node's bus port that way while it was down 10 s)."""
    import random

    low, high = ephemeral_port_range()
    choices = [
        first
        for first in range(10_000, 65_536 - count - also_at)
        if first + count + also_at <= low or first > high
    ]
    fixed = choices if len(choices) >= attempts else list(range(20_000, 65_536 - count - also_at))
    for first in random.sample(fixed, attempts):
        wanted = [first + n for n in range(count)]
        wanted += [port + also_at for port in wanted] if also_at else []
        if not any(port_is_open(port) for port in wanted) and all(map(_bindable, wanted)):
            return first
    raise ServiceError(f"found no {count} consecutive free ports on 127.0.0.1")


def ephemeral_port_range() -> tuple[int, int]:
    """The ports Linux gives to outgoing connections and to bind(0) (32768-60999 by default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True for a running process; False for a gone one or a zombie awaiting its parent."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def process_tree(root: int) -> list[int]:
    """`root` and every live process descended from it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        found.append(pid)
        frontier.extend(child for child, parent in parents.items() if parent == pid)
    return found


TCP_ESTABLISHED = "01"  # states in the `st` column of /proc/net/tcp
TCP_LISTEN = "0A"


def socket_inodes(proc_net_tcp: str, local_port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets in `state` whose local end is `local_port`, from the text of
    /proc/net/tcp or /proc/net/tcp6 (addresses are hex `ADDR:PORT`)."""
    inodes: set[int] = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != state:
            continue
        if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
            inodes.add(int(fields[9]))
    return inodes


def sockets_by_process(pids: Sequence[int], local_port: int, state: str) -> dict[int, int]:
    """How many TCP sockets in `state` on `local_port` each process holds open (Linux): e.g.
    which processes listen on a server's port, and how the kernel spread a load generator's
    connections over them."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            inodes |= socket_inodes(Path(table).read_text(), local_port, state)
    counts: dict[int, int] = {}
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                        held += 1
        counts[pid] = held
    return counts


@dataclass(frozen=True)
class Running:
    """Our process as its pid file records it."""

    pid: int
    address: str | None  # None: a pid file written before addresses were recorded


@dataclass(frozen=True)
class ManagedProcess:
    """One server process: its name ("Kafka"), pid file, log file, the marker in its command
    line and the address (host:port) it is configured to listen on."""

    name: str
    pid_file: Path
    log_file: Path
    marker: str
    address: str | None = None

    def running(self) -> Running | None:
        """Our running process, or None (a stale pid file is removed)."""
        try:
            fields = self.pid_file.read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            return None
        cmdline = _cmdline(pid)
        # An empty command line is a process between fork and exec (or a launcher re-exec):
        # still ours. A different non-empty one means the pid was recycled.
        if pid_alive(pid) and (not cmdline or self.marker in cmdline):
            return Running(pid, fields[1] if len(fields) > 1 else None)
        self.pid_file.unlink(missing_ok=True)
        return None

    def pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        running = self.running()
        return None if running is None else running.pid

    @property
    def title(self) -> str:
        return f"{self.name} on {self.address}" if self.address else self.name

    def already_running(self, keep_setting: Callable[[str], str]) -> bool:
        """True when ours runs on the configured address. When it runs on another one, a
        ServiceError names that address; `keep_setting(address)` is the setting that would
        select it (for example `RECSYS_REDIS_URL=redis://127.0.0.1:6390/0`)."""
        running = self.running()
        if running is None:
            return False
        if running.address is not None and running.address != self.address:
            raise ServiceError(
                f"{self.name} started by recsys already runs on {running.address} "
                f"(pid {running.pid}), not on the configured {self.address}. Stop it first with "
                f"`recsys services down`, or keep using it: export {keep_setting(running.address)}"
            )
        return True

    def start(self, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # A new session: Ctrl-C in the shell that ran `services up` must not kill it.
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n{self.address or ''}\n")
        return proc.pid

    def wait_ready(
        self, check: Callable[[], bool], timeout_s: float, stop_timeout_s: float = 10.0
    ) -> None:
        """Poll `check` until it passes; fail early if the process died, with its log tail.

        On a time-out the process is stopped (SIGTERM, SIGKILL after `stop_timeout_s`) before
        the error is raised: a half-started server must not hold the port and the pid file, or
        the next `up` would take it for a running one.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(
                    f"{self.title} exited during start-up. Last log lines "
                    f"({self.log_file}):\n{self.log_tail()}"
                )
            if check():
                return
            time.sleep(0.2)
        self.stop(timeout_s=stop_timeout_s)
        raise ServiceError(
            f"{self.title} did not become ready within {timeout_s:.0f} s and was stopped. "
            f"See its log for why ({self.log_file}), fix that and start it again; last lines:"
            f"\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`; True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        if _signal(pid, signal.SIGTERM):
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.pid() is not None:
                _reap(pid)
                time.sleep(0.1)
            if self.pid() is not None and _signal(pid, signal.SIGKILL):
                while self.pid() is not None:
                    _reap(pid)
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal(pid: int, signum: signal.Signals) -> bool:
    """Send `signum`; False when the process is already gone (it exited after our check)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, os.WNOHANG)
