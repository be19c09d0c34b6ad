"""A real Redis server (Debian's redis-server) as a local process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.local.process import ManagedProcess, ServiceError, port_is_open, require_binary


@dataclass(frozen=True)
class RedisServer:
    """One redis-server; `home` holds its pid file, log and (with `appendonly`) its AOF."""

    home: Path
    port: int
    appendonly: bool = False
    # A node of a Redis Cluster (`RedisCluster` joins several): cluster mode, its own nodes file.
    cluster_node: bool = False

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Redis",
            pid_file=self.home / "redis.pid",
            log_file=self.home / "redis.log",
            # redis-server rewrites its process title after start-up, so only the binary's
            # name is in its command line throughout; the pid file does the rest.
            marker="redis-server",
            address=f"127.0.0.1:{self.port}",
        )

    @property
    def url(self) -> str:
        return url_of(f"127.0.0.1:{self.port}")

    def start(self, timeout_s: float = 20.0) -> bool:
        """Start redis-server unless ours already runs; False if it was already running (on this
        port: on another one it is a ServiceError)."""
        if self.process.already_running(lambda address: f"RECSYS_REDIS_URL={url_of(address)}"):
            return False
        binary = require_binary("redis-server", "apt-get install -y redis-server")
        if port_is_open(self.port):
            raise ServiceError(
                f"Port {self.port} on 127.0.0.1 is taken by a process recsys did not start. "
                "Stop it (a system Redis: `service redis-server stop`), or choose another port "
                "with RECSYS_REDIS_URL."
            )
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.home), "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no", "--protected-mode", "yes",
            # A user's state is one hash whose vector and history fields exceed the default
            # 64-byte listpack limit; as a listpack it takes about half the memory.
            "--hash-max-listpack-value", "1024",
        ]  # fmt: skip
        if self.cluster_node:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                # A stopped master is declared failed after this long (tests stop one on purpose).
                "--cluster-node-timeout", "3000",
                # Without replicas a failed master leaves its slots uncovered; the other shards
                # keep answering for theirs instead of the whole cluster refusing every command.
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip
        self.process.start(argv, cwd=self.home)
        self.process.wait_ready(lambda: ping_ok(self.url), timeout_s)
        return True

    def stop(self) -> bool:
        return self.process.stop(timeout_s=10.0)


def url_of(address: str) -> str:
    """The RECSYS_REDIS_URL of a server on `address` (host:port)."""
    return f"redis://{address}/0"


def ping_ok(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
