"""A real Redis Cluster on 127.0.0.1: several `redis-server --cluster-enabled yes` processes,
joined once with `redis-cli --cluster create` (Debian's redis-tools), as `recsys services up
--redis-cluster N` and the cluster tests run it.

`redis-cli` refuses fewer than three masters; a cluster of one or two (which `recsys bench stream`
uses to show how the cost per shard changes with the number of shards) is formed by hand with
CLUSTER ADDSLOTSRANGE and CLUSTER MEET, the commands `redis-cli` sends itself."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.local.process import ServiceError, require_binary
from infra.local.redis import RedisServer, url_of

# Slots every master serves once the cluster is formed.
SLOTS = 16384


@dataclass(frozen=True)
class RedisCluster:
    """`masters` masters on consecutive ports from `first_port`, each with `replicas` replicas on
    the ports after them; `home` holds one folder per node (pid file, log, nodes.conf, AOF)."""

    home: Path
    first_port: int
    masters: int = 3
    replicas: int = 0
    appendonly: bool = False

    def __post_init__(self) -> None:
        if self.masters < 1:
            raise ValueError("a Redis Cluster needs at least one master")
        if self.replicas < 0:
            raise ValueError("replicas must be 0 or more")
        if self.masters < 3 and self.replicas:
            raise ValueError("replicas need 3 masters or more (redis-cli refuses fewer)")

    @property
    def nodes(self) -> list[RedisServer]:
        count = self.masters * (1 + self.replicas)
        return [
            RedisServer(self.home / str(port), port, self.appendonly, cluster_node=True)
            for port in range(self.first_port, self.first_port + count)
        ]

    @property
    def url(self) -> str:
        """RECSYS_REDIS_URL of the cluster: its first node, from which clients discover the
        rest (with RECSYS_REDIS_CLUSTER=true)."""
        return url_of(f"127.0.0.1:{self.first_port}")

    def start(self, timeout_s: float = 30.0) -> bool:
        """Start every node that is not running and form the cluster once; False if all nodes
        already ran."""
        started = [node.start(timeout_s) for node in self.nodes]
        if not self.formed():
            if self.masters >= 3:
                self._create()
            else:
                self._create_small()
        self._wait_ok(timeout_s)
        return any(started)

    def stop(self) -> bool:
        """Stop every node found under `home`, however many were started."""
        return any([node.stop() for node in self.running_nodes(self.home)])

    @staticmethod
    def running_nodes(home: Path) -> list[RedisServer]:
        """The nodes that have a folder (so a pid file, perhaps) under `home`."""
        if not home.is_dir():
            return []
        ports = sorted(int(p.name) for p in home.iterdir() if p.is_dir() and p.name.isdigit())
        return [RedisServer(home / str(port), port, cluster_node=True) for port in ports]

    def formed(self) -> bool:
        """Whether the first node already knows every slot (the cluster was created before)."""
        info = _cluster_info(self.nodes[0].port)
        return int(info.get("cluster_slots_assigned", "0")) == SLOTS

    def healthy(self) -> bool:
        return all(_cluster_info(node.port).get("cluster_state") == "ok" for node in self.nodes)

    def _create(self) -> None:
        cli = require_binary("redis-cli", "apt-get install -y redis-tools")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        outcome = subprocess.run(
            [cli, "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if outcome.returncode != 0:
            raise ServiceError(
                f"redis-cli --cluster create failed ({outcome.returncode}): "
                f"{(outcome.stdout + outcome.stderr)[-1500:]}\nIf the nodes kept a half-made "
                f"cluster, stop them (`recsys services down`) and remove {self.home}."
            )

    def _create_small(self) -> None:
        """Split the slots evenly over one or two masters and introduce them to each other."""
        import redis

        nodes = self.nodes
        share = SLOTS // len(nodes)
        for index, node in enumerate(nodes):
            first = index * share
            last = SLOTS - 1 if index == len(nodes) - 1 else first + share - 1
            client = redis.Redis(port=node.port)
            try:
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
                if index:
                    client.execute_command("CLUSTER MEET", "127.0.0.1", nodes[0].port)  # type: ignore[no-untyped-call]
            except redis.RedisError as exc:
                raise ServiceError(
                    f"forming a {len(nodes)}-master Redis Cluster failed at port {node.port}: "
                    f"{exc}. Stop the nodes (`recsys services down`) and remove {self.home}."
                ) from exc
            finally:
                client.close()

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(0.2)
        raise ServiceError(
            f"the Redis Cluster on ports {self.first_port}+ did not reach cluster_state:ok within "
            f"{timeout_s:.0f} s; see the logs under {self.home}"
        )


def _cluster_info(port: int) -> dict[str, str]:
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        raw = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses CLUSTER INFO itself
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
