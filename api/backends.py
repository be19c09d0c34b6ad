"""Guarded backend calls: a circuit breaker, a timeout within the request budget, a span and a
timing around every call the API makes to Redis or the vector index.

A failure of any kind becomes `BackendUnavailableError`, which the recommender turns into a
fallback with a reason: a request never fails because a backend did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from api import metrics
from api.breaker import Budget, CircuitBreaker
from api.telemetry import child_span

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendUnavailableError(Exception):
    """A backend call was refused (open circuit, spent budget), timed out or failed."""

    def __init__(self, backend: str, kind: str, detail: str = "") -> None:
        self.backend = backend
        self.kind = kind
        super().__init__(f"{backend} unavailable ({kind}{': ' + detail if detail else ''})")

    @property
    def reason(self) -> str:
        """A short, stable label for responses and metrics, e.g. `redis_timeout`."""
        return f"{self.backend}_{self.kind}"


class GuardedBackend:
    """Calls to one backend, all through the same breaker."""

    def __init__(
        self,
        name: str,
        db_system: str,
        breaker: CircuitBreaker,
        call_timeout_s: float,
        tracer: Tracer,
    ) -> None:
        self.name = name
        self.db_system = db_system
        self.breaker = breaker
        self.call_timeout_s = call_timeout_s
        self._tracer = tracer

    def _refuse(self, kind: str) -> BackendUnavailableError:
        metrics.BACKEND_FAILURES.labels(self.name, kind).inc()
        return BackendUnavailableError(self.name, kind)

    async def call(self, operation: str, budget: Budget, factory: Callable[[], Awaitable[T]]) -> T:
        timeout_s = budget.timeout(self.call_timeout_s)
        # Budget first: a half-open breaker's single trial must not be spent on a call that
        # would not be made.
        if timeout_s <= 0:
            raise self._refuse("budget")
        if not self.breaker.allow():
            raise self._refuse("open_circuit")
        started = time.perf_counter()
        with child_span(
            self._tracer,
            f"{self.name} {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": self.db_system, "db.operation.name": operation},
        ) as span:
            try:
                async with asyncio.timeout(timeout_s):
                    result = await factory()
            except TimeoutError:
                self.breaker.record_failure()
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise self._refuse("timeout") from None
            except asyncio.CancelledError:
                self.breaker.record_failure()
                raise
            except Exception as exc:
                # Any exception: the client libraries raise many kinds (connection, protocol,
                # missing version), and each means this backend cannot answer right now.
                self.breaker.record_failure()
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                log.warning("%s %s failed: %r", self.name, operation, exc)
                metrics.BACKEND_FAILURES.labels(self.name, "error").inc()
                raise BackendUnavailableError(self.name, "error", type(exc).__name__) from exc
            finally:
                elapsed = time.perf_counter() - started
                metrics.backend_seconds_series(self.name, operation).observe(elapsed)
        self.breaker.record_success()
        return result
