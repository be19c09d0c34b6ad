"""A real Jaeger v2 as a local process: installed from its Go module (infra/jaeger/install.sh,
cached under ~/.cache/recsys/jaeger/), configured by infra/jaeger/config.yaml (OTLP in, memory
storage), bound to 127.0.0.1 on chosen ports."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.local.process import ManagedProcess, ServiceError, port_is_open

JAEGER_DIR = Path(__file__).resolve().parents[1] / "jaeger"
INSTALL_SCRIPT = JAEGER_DIR / "install.sh"
CONFIG = JAEGER_DIR / "config.yaml"
# The first build downloads and compiles several hundred packages: ~4 minutes on 2 cores (see
# docs/operations.md), so the limit is generous; later calls return the cached binary at once.
INSTALL_TIMEOUT_S = 1800.0


def install_jaeger(cache_dir: Path, timeout_s: float = INSTALL_TIMEOUT_S) -> Path:
    """The cached Jaeger binary, built first if missing; ServiceError says why it cannot be."""
    try:
        result = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            env={**os.environ, "RECSYS_CACHE_DIR": str(cache_dir)},
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ServiceError(
            f"building Jaeger took longer than {timeout_s:.0f} s ({INSTALL_SCRIPT})"
        ) from None
    binary = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or binary is None or not binary.is_file():
        tail = "\n".join(result.stderr.strip().splitlines()[-20:])
        raise ServiceError(
            f"could not install Jaeger with {INSTALL_SCRIPT} (exit {result.returncode}):\n{tail}"
        )
    return binary


@dataclass(frozen=True)
class JaegerServer:
    """One Jaeger process; `home` holds its pid file and log."""

    home: Path
    binary: Path
    otlp_http_port: int
    otlp_grpc_port: int
    query_http_port: int
    query_grpc_port: int
    health_port: int

    @property
    def process(self) -> ManagedProcess:
        return ManagedProcess(
            name="Jaeger",
            pid_file=self.home / "jaeger.pid",
            log_file=self.home / "jaeger.log",
            marker=str(self.binary),
            address=f"127.0.0.1:{self.query_http_port}",
        )

    @property
    def otlp_endpoint(self) -> str:
        """The OTLP/HTTP base URL, as RECSYS_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_http_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        if self.process.pid() is not None:
            return
        ports = (
            self.otlp_http_port, self.otlp_grpc_port, self.query_http_port,
            self.query_grpc_port, self.health_port,
        )  # fmt: skip
        taken = [port for port in ports if port_is_open(port)]
        if taken:
            raise ServiceError(f"ports {taken} on 127.0.0.1 are taken; choose others")
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            "JAEGER_LISTEN_HOST": "127.0.0.1",
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http_port),
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "JAEGER_QUERY_HTTP_PORT": str(self.query_http_port),
            "JAEGER_QUERY_GRPC_PORT": str(self.query_grpc_port),
            "JAEGER_HEALTH_PORT": str(self.health_port),
        }
        self.process.start([str(self.binary), "--config", str(CONFIG)], cwd=self.home, env=env)
        self.process.wait_ready(self.ready, timeout_s)

    def ready(self) -> bool:
        """The query API answers and the OTLP receiver accepts connections."""
        try:
            response = httpx.get(f"{self.query_url}/api/services", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and port_is_open(self.otlp_http_port)

    def traces(self, service: str, limit: int = 20) -> list[dict[str, Any]]:
        """Recent traces that include a span of `service` (Jaeger's JSON query API)."""
        response = httpx.get(
            f"{self.query_url}/api/traces",
            params={"service": service, "limit": limit, "lookback": "1h"},
            timeout=5.0,
        )
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json().get("data") or []
        return data

    def stop(self) -> bool:
        return self.process.stop(timeout_s=10.0)
