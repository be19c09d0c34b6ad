"""`recsys services up|down|status`: the local Kafka broker and Redis, started together."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from infra.local.kafka import KafkaServer, metadata_ok
from infra.local.process import ManagedProcess
from infra.local.redis import RedisServer, ping_ok, url_of
from infra.local.redis_cluster import RedisCluster


@dataclass(frozen=True)
class ServiceStatus:
    """`address` is where the service runs (as recorded when it started), else where the
    settings say it should; `configured` is always the latter."""

    name: str
    address: str
    pid: int | None
    healthy: bool
    configured: str

    @property
    def elsewhere(self) -> bool:
        """Runs, but not where the settings point: clients using them find nothing."""
        return self.pid is not None and self.address != self.configured


@dataclass(frozen=True)
class LocalServices:
    """The local Kafka broker and the local Redis: one server, or a Redis Cluster of several
    (`cluster`, with RECSYS_REDIS_CLUSTER=true or `recsys services up --redis-cluster N`) whose
    first node takes the configured Redis port."""

    kafka: KafkaServer
    redis: RedisServer
    cluster: RedisCluster | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        redis_appendonly: bool = False,
        redis_cluster_masters: int | None = None,
        redis_cluster_replicas: int = 0,
    ) -> LocalServices:
        services_dir = settings.state_dir / "services"
        if redis_cluster_masters is None and settings.redis_cluster:
            redis_cluster_masters = 3
        return cls(
            kafka=KafkaServer(
                home=services_dir / "kafka",
                port=settings.kafka_port,
                controller_port=settings.kafka_controller_port,
                cache_dir=settings.cache_dir,
            ),
            redis=RedisServer(
                home=services_dir / "redis", port=settings.redis_port, appendonly=redis_appendonly
            ),
            cluster=None
            if redis_cluster_masters is None
            else RedisCluster(
                home=services_dir / "redis-cluster",
                first_port=settings.redis_port,
                masters=redis_cluster_masters,
                replicas=redis_cluster_replicas,
                appendonly=redis_appendonly,
            ),
        )

    def up(self) -> dict[str, bool]:
        """Start whatever is not running; returns which ones were started now."""
        redis: RedisServer | RedisCluster = self.cluster or self.redis
        name = "redis cluster" if self.cluster else "redis"
        started = {name: redis.start()}
        try:
            started["kafka"] = self.kafka.start()
        except Exception:
            if started[name]:
                redis.stop()
            raise
        return started

    def down(self) -> dict[str, bool]:
        """Stop whatever `up` started: the broker, the Redis server and any cluster nodes."""
        stopped = {"kafka": self.kafka.stop(), "redis": self.redis.stop()}
        nodes = RedisCluster.running_nodes(self.redis.home.parent / "redis-cluster")
        if nodes:
            stopped["redis cluster"] = any([node.stop() for node in nodes])
        return stopped

    def status(self) -> list[ServiceStatus]:
        kafka_pid, kafka_at = _running_at(self.kafka.process)
        kafka = kafka_at or self.kafka.bootstrap_servers
        rows = [
            ServiceStatus(
                "kafka",
                kafka,
                kafka_pid,
                kafka_pid is not None and metadata_ok(kafka),
                self.kafka.bootstrap_servers,
            )
        ]
        if self.cluster is not None:
            first_pid, first_at = _running_at(self.cluster.nodes[0].process)
            address = url_of(first_at) if first_at else self.cluster.url
            healthy = first_pid is not None and self.cluster.healthy()
            rows.append(
                ServiceStatus("redis cluster", address, first_pid, healthy, self.cluster.url)
            )
            return rows
        redis_pid, redis_at = _running_at(self.redis.process)
        redis = url_of(redis_at) if redis_at else self.redis.url
        rows.append(
            ServiceStatus(
                "redis", redis, redis_pid, redis_pid is not None and ping_ok(redis), self.redis.url
            )
        )
        return rows

    def exports(self) -> dict[str, str]:
        """Environment variables that point every recsys process at these services."""
        exports = {"RECSYS_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers}
        if self.cluster is not None:
            return exports | {"RECSYS_REDIS_URL": self.cluster.url, "RECSYS_REDIS_CLUSTER": "true"}
        return exports | {"RECSYS_REDIS_URL": self.redis.url}


def _running_at(process: ManagedProcess) -> tuple[int | None, str | None]:
    running = process.running()
    return (None, None) if running is None else (running.pid, running.address)
