"""`recsys services up|down|status`: the local Kafka broker and Redis, started together."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings
from infra.local.kafka import KafkaServer, metadata_ok
from infra.local.process import ManagedProcess
from infra.local.redis import RedisServer, ping_ok, url_of


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
    kafka: KafkaServer
    redis: RedisServer

    @classmethod
    def from_settings(cls, settings: Settings, *, redis_appendonly: bool = False) -> LocalServices:
        services_dir = settings.state_dir / "services"
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
        )

    def up(self) -> dict[str, bool]:
        """Start whatever is not running; returns which ones were started now."""
        started = {"redis": self.redis.start()}
        try:
            started["kafka"] = self.kafka.start()
        except Exception:
            if started["redis"]:
                self.redis.stop()
            raise
        return started

    def down(self) -> dict[str, bool]:
        return {"kafka": self.kafka.stop(), "redis": self.redis.stop()}

    def status(self) -> list[ServiceStatus]:
        kafka_pid, kafka_at = _running_at(self.kafka.process)
        kafka = kafka_at or self.kafka.bootstrap_servers
        redis_pid, redis_at = _running_at(self.redis.process)
        redis = url_of(redis_at) if redis_at else self.redis.url
        return [
            ServiceStatus(
                "kafka",
                kafka,
                kafka_pid,
                kafka_pid is not None and metadata_ok(kafka),
                self.kafka.bootstrap_servers,
            ),
            ServiceStatus(
                "redis", redis, redis_pid, redis_pid is not None and ping_ok(redis), self.redis.url
            ),
        ]

    def exports(self) -> dict[str, str]:
        """Environment variables that point every recsys process at these services."""
        return {
            "RECSYS_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "RECSYS_REDIS_URL": self.redis.url,
        }


def _running_at(process: ManagedProcess) -> tuple[int | None, str | None]:
    running = process.running()
    return (None, None) if running is None else (running.pid, running.address)
