"""Schema-driven fuzzing: requests generated from the OpenAPI document (schemathesis) against
the app served by uvicorn over the real Redis, Kafka and a published model. No 5xx, ever.

Bounded: a few dozen examples per operation (valid and invalid), so the whole run stays
well under a minute.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from api.main import create_app
from core.settings import Settings
from infra.local.process import free_port

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 20  # in each mode: valid requests, then invalid ones


@pytest.fixture
def served_url(make_api_settings: Callable[..., Settings], model_version: str) -> Iterator[str]:
    """The app on a free port, in a thread with its own event loop (lifespan included)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(make_api_settings()), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_no_server_errors(served_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{served_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 7

    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_5xx(case: Any) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)

        try:
            no_5xx()
        except Unsatisfiable:
            # No parameters and no body: there is no invalid request to make.
            assert mode is GenerationMode.NEGATIVE
