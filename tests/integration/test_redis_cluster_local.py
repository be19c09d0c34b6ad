"""A real local Redis Cluster: `RedisCluster` forms it once from redis-server processes,
clients reach every shard through one seed node, and `recsys services` runs it end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.local.process import free_port, free_port_run, pid_alive
from infra.local.redis_cluster import SLOTS, RedisCluster

pytestmark = pytest.mark.integration

RECSYS = [sys.executable, "-m", "recsys"]
BUS_OFFSET = 10_000  # a cluster node's bus port is its port + 10000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    local = RedisCluster(tmp_path / "cluster", free_port_run(3, also_at=BUS_OFFSET))
    try:
        local.start()
        yield local
    finally:
        local.stop()


def masters_and_slots(port: int) -> dict[str, int]:
    """Each master's address and how many slots it serves (CLUSTER NODES, as redis-py parses
    it: address -> flags and [first, last] slot ranges)."""
    client = redis.Redis(port=port)
    try:
        nodes = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    return {
        address: sum(int(span[-1]) - int(span[0]) + 1 for span in node["slots"])
        for address, node in nodes.items()
        if "master" in node["flags"]
    }


def test_three_masters_share_every_slot(cluster: RedisCluster) -> None:
    served = masters_and_slots(cluster.first_port)
    assert len(served) == 3
    assert sum(served.values()) == SLOTS
    assert all(slots > SLOTS // 4 for slots in served.values())  # spread, not one big shard
    assert cluster.healthy()


@pytest.mark.parametrize("masters", [1, 2])
def test_one_or_two_masters_are_formed_by_hand_and_serve_every_slot(
    masters: int, tmp_path: Path
) -> None:
    small = RedisCluster(tmp_path / "small", free_port_run(masters, also_at=BUS_OFFSET), masters)
    try:
        small.start()
        served = masters_and_slots(small.first_port)
        assert len(served) == masters
        assert sum(served.values()) == SLOTS
        client = redis.RedisCluster.from_url(small.url)
        try:
            for n in range(20):  # keys on every master, through the one seed
                client.set(f"k{n}", n)
            assert [client.get(f"k{n}") for n in range(20)] == [b"%d" % n for n in range(20)]
        finally:
            client.close()
        # Stopped and started again, the nodes keep the cluster they formed (nodes.conf).
        small.stop()
        assert small.start()
        assert small.healthy()
    finally:
        small.stop()


def test_replicas_need_three_masters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 masters"):
        RedisCluster(tmp_path, 7000, masters=2, replicas=1)


def test_a_client_with_one_seed_reaches_every_shard(cluster: RedisCluster) -> None:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        for n in range(60):
            client.set(f"recsys:test:{n}", n)
        owners = {
            client.get_node_from_key(f"recsys:test:{n}").port  # type: ignore[no-untyped-call]
            for n in range(60)
        }
        assert owners == {node.port for node in cluster.nodes}
        assert [client.get(f"recsys:test:{n}") for n in range(60)] == [
            str(n).encode() for n in range(60)
        ]
        # Keys with one hash tag live in one slot, so one script may touch them all.
        state_slot = client.keyslot("recsys:{u:42}:state")  # type: ignore[no-untyped-call]
        other_slot = client.keyslot("recsys:{u:42}:other")  # type: ignore[no-untyped-call]
        assert state_slot == other_slot
    finally:
        client.close()


def test_a_restarted_cluster_is_formed_again_without_a_new_create(cluster: RedisCluster) -> None:
    cluster.stop()
    assert not cluster.healthy()
    assert cluster.start() is True  # the nodes started again ...
    assert cluster.formed()  # ... from their nodes.conf
    assert cluster.healthy()
    assert cluster.start() is False  # and a second start is a no-op


def test_services_up_with_a_cluster_and_down(tmp_path: Path) -> None:
    first = free_port_run(3, also_at=BUS_OFFSET)
    kafka_port, controller_port = free_port(), free_port()
    env = {
        **os.environ,
        "RECSYS_STATE_DIR": str(tmp_path / "state"),
        "RECSYS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "RECSYS_KAFKA_CONTROLLER_PORT": str(controller_port),
        "RECSYS_REDIS_URL": f"redis://127.0.0.1:{first}/0",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RECSYS, "services", *args], env=env, capture_output=True, text=True, timeout=180
        )

    nodes_dir = tmp_path / "state" / "services" / "redis-cluster"
    try:
        up = run("up", "--redis-cluster", "3")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "RECSYS_REDIS_CLUSTER=true" in up.stdout
        assert f"RECSYS_REDIS_URL=redis://127.0.0.1:{first}/0" in up.stdout
        pids = [
            int((nodes_dir / str(first + n) / "redis.pid").read_text().split()[0]) for n in range(3)
        ]
        assert all(map(pid_alive, pids))
        status = run("status")
        assert status.returncode == 1  # the settings still say standalone: it is not "ours"
        env["RECSYS_REDIS_CLUSTER"] = "true"
        status = run("status")
        assert status.returncode == 0, status.stdout
        assert "redis cluster" in status.stdout
        too_few = run("up", "--redis-cluster", "0")
        assert too_few.returncode != 0
    finally:
        down = run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "redis cluster: stopped" in down.stdout
    assert not any(map(pid_alive, pids))
