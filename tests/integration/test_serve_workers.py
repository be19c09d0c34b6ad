"""`recsys serve --workers 2`: one scrape of /metrics counts the requests of every worker."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from recsys.bench.api import serving
from recsys.bench.common import service_env
from tests.integration.conftest import Published

pytestmark = pytest.mark.integration

REQUESTS = 40
RECOMMEND_200 = re.compile(
    r"^recsys_api_requests_total"
    r'\{method="GET",route="/recommend/\{user_id\}",status="200"\} (\S+)$',
    re.M,
)


def test_metrics_sum_over_worker_processes(
    service_settings: Settings, published: Published, tmp_path: Path
) -> None:
    settings = service_settings.model_copy(update={"qdrant_path": published.qdrant_path})
    with serving(service_env(settings), 2, tmp_path) as server:
        for n in range(REQUESTS):
            # A new connection each time, so that both workers get requests.
            response = httpx.get(f"{server.base_url}/recommend/u{n % 60}", timeout=10)
            assert response.status_code == 200
        for _ in range(4):  # whichever worker answers the scrape
            text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
            counts = RECOMMEND_200.findall(text)
            assert [float(c) for c in counts] == [REQUESTS], text[:2000]


def test_the_connections_each_worker_holds_are_counted(
    service_settings: Settings, published: Published, tmp_path: Path
) -> None:
    settings = service_settings.model_copy(update={"qdrant_path": published.qdrant_path})
    with serving(service_env(settings), 2, tmp_path) as server:
        assert server.connections_per_worker() == [0, 0]
        clients = [httpx.Client(base_url=server.base_url, timeout=10) for _ in range(6)]
        try:
            for client in clients:  # each keeps its connection open once it has answered
                assert client.get("/health/live").status_code == 200
            split = server.connections_per_worker()
            assert len(split) == 2
            assert sum(split) == 6
        finally:
            for client in clients:
                client.close()
