"""A real single-node Apache Kafka 4 broker (KRaft mode) as a local process.

The broker's jars are resolved from Maven Central by `mvn` into a cache outside the repository
(once per Kafka version); the log directory is formatted once and re-used across starts.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from infra.local.process import ManagedProcess, ServiceError, port_is_open, require_binary

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
HEAP = "-Xmx512m"
POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = INFO
"""


def resolve_jars(cache_dir: Path) -> Path:
    """Return a directory holding the broker's jars, running mvn the first time."""
    libs = cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    # The same packages as .ci/run installs: copying dependencies needs no compiler, a JRE will do.
    mvn = require_binary("mvn", "apt-get install -y maven openjdk-17-jre-headless")
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        f"-Dkafka.version={KAFKA_VERSION}", f"-Dlog4j.version={LOG4J_VERSION}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(
            "mvn could not resolve the Kafka broker's jars from Maven Central "
            f"(is the Maven repository reachable?):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    done.write_text(KAFKA_VERSION)
    return libs


def cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: a UUID as unpadded URL-safe base64, never
    starting with "-" (Kafka's `Uuid.randomUuid` draws again too): the command line would
    take such an id for an option, and formatting failed about once in 64 starts."""
    while True:
        encoded = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


@dataclass(frozen=True)
class KafkaServer:
    """One broker+controller node; `home` holds its config, logs and pid file."""

    home: Path
    port: int
    controller_port: int
    cache_dir: Path

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Kafka",
            pid_file=self.home / "kafka.pid",
            log_file=self.home / "kafka.log",
            marker=f"-Drecsys.kafka.home={self.home}",
            address=self.bootstrap_servers,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        data_dir = self.home / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data_dir),
            "num.partitions": "4",
            # A single node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Local use: a consumer group should form at once, not after 3 s of waiting.
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "8",
        }
        config = self.home / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        java = require_binary("java", "apt-get install -y openjdk-17-jre-headless")
        return [
            java, HEAP, "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            f"-Drecsys.kafka.home={self.home}",
            "-cp", f"{libs}/*", main, *args,
        ]  # fmt: skip

    def _format_once(self, libs: Path, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cmd = self._java_cmd(
            libs, "kafka.tools.StorageTool", "format", "--standalone",
            "-t", cluster_id(), "-c", str(config),
        )  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(
                f"Formatting the Kafka log dir failed:\n{result.stdout}{result.stderr}"
            )

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the broker unless ours already runs; False if it was already running (on this
        port: on another one it is a ServiceError)."""
        if self.process.already_running(
            lambda address: f"RECSYS_KAFKA_BOOTSTRAP_SERVERS={address}"
        ):
            return False
        for port in (self.port, self.controller_port):
            if port_is_open(port):
                raise ServiceError(
                    f"Port {port} on 127.0.0.1 is taken by a process recsys did not start. "
                    "Stop it, or choose other ports with RECSYS_KAFKA_BOOTSTRAP_SERVERS and "
                    "RECSYS_KAFKA_CONTROLLER_PORT."
                )
        self.home.mkdir(parents=True, exist_ok=True)
        libs = resolve_jars(self.cache_dir)
        config = self._write_config()
        self._format_once(libs, config)
        self.process.start(self._java_cmd(libs, "kafka.Kafka", str(config)), cwd=self.home)
        self.process.wait_ready(lambda: metadata_ok(self.bootstrap_servers), timeout_s)
        return True

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)


def metadata_ok(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True when a metadata request to the cluster succeeds and names at least one broker."""
    if not port_is_open(int(bootstrap_servers.split(",")[0].rpartition(":")[2])):
        return False
    return asyncio.run(_metadata_ok(bootstrap_servers, timeout_s))


async def _metadata_ok(bootstrap_servers: str, timeout_s: float) -> bool:
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
