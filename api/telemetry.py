"""Request spans and metrics, and the request body limit, as plain ASGI middleware."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from core.settings import Settings
from core.tracing import setup_tracing

SERVICE_NAME = "recsys-api"
# The sampler of the provider that exports nothing: a trace is recorded only if its caller's is.
_NEW_TRACES_OFF = ParentBased(ALWAYS_OFF)
# Methods of the routes that only read: nothing they call carries a trace context onwards.
_READS = ("GET", "HEAD")


def api_tracer(settings: Settings) -> Tracer:
    """The API's tracer: the exporting provider when OTLP is configured, else a provider with
    no exporter that records nothing of its own: its root spans are not sampled (recording
    spans nobody exports cost about a tenth of a /recommend), yet they carry real trace ids,
    so POST /events always hands a `traceparent` to Kafka. A request that arrives with a
    sampled `traceparent` is still recorded and passed on as sampled, as its caller asked; a
    worker exporting traces while the API does not drops the unsampled ones, so tracing is
    switched on for the API and the workers together (RECSYS_OTLP_ENDPOINT)."""
    setup_tracing(settings, SERVICE_NAME)
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE_NAME}), sampler=_NEW_TRACES_OFF
        )
    return provider.get_tracer("recsys.api")


def samples_new_traces(tracer: Tracer) -> bool:
    """Whether a request without a sampled `traceparent` is recorded: false only for the
    non-exporting provider of `api_tracer`."""
    return getattr(tracer, "sampler", None) is not _NEW_TRACES_OFF


def child_span(tracer: Tracer, name: str, **options: Any) -> AbstractContextManager[Span]:
    """A span for one step of a request (a backend call, MMR), as the current span's child; or
    no span at all when the current one is not recorded. A child of an unsampled request would
    not be recorded either, and creating and entering each still costs several microseconds;
    the steps propagate no context onwards, so nothing downstream misses it."""
    if not trace.get_current_span().is_recording():
        return nullcontext(INVALID_SPAN)
    return tracer.start_as_current_span(name, **options)


class ObservabilityMiddleware:
    """One server span per request (continuing an incoming `traceparent`), and the request
    counter and latency histogram labelled by route template, never by raw path.

    With tracing off, a read without `traceparent` gets no span: it would not be recorded,
    and no read hands its trace id on (POST /events does, to Kafka, so it always has one).
    Starting and entering an unrecorded span, and parsing the headers for it, cost about
    80 µs of a /recommend once the process has been idle a few milliseconds (ad-hoc timing).
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer
        self.skip_unsampled_reads = not samples_new_traces(tracer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self._server_span(method, scope["headers"]) as span:
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                route = _route_template(scope)
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
                metrics.request_series(route, method, str(status)).inc()
                elapsed = time.perf_counter() - started
                metrics.request_seconds_series(route, method).observe(elapsed)

    def _server_span(
        self, method: str, headers: list[tuple[bytes, bytes]]
    ) -> AbstractContextManager[Span]:
        if (
            self.skip_unsampled_reads
            and method in _READS
            and not any(name == b"traceparent" for name, _ in headers)
        ):
            return nullcontext(INVALID_SPAN)
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        return self.tracer.start_as_current_span(
            method, context=extract(carrier), kind=SpanKind.SERVER
        )


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`: by Content-Length up front, or while reading a
    chunked body, before it is all in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No route reads a GET body, so there is nothing to count (and GET is the hot path).
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.max_bytes
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
