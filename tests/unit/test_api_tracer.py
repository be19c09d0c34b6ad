"""Without an OTLP endpoint the API records no spans of its own, yet still propagates a
real trace context (POST /events hands it to Kafka), and honours a sampled caller."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import INVALID_SPAN, SpanKind
from starlette.types import Message, Receive, Scope, Send

from api.telemetry import ObservabilityMiddleware, api_tracer, child_span, samples_new_traces
from core.settings import Settings

pytestmark = pytest.mark.unit


def test_root_spans_are_not_recorded_but_carry_a_real_trace_id() -> None:
    tracer = api_tracer(Settings(otlp_endpoint=None))
    with tracer.start_as_current_span("GET /recommend/{user_id}") as span:
        assert not span.is_recording()
        carrier: dict[str, str] = {}
        inject(carrier)
    _version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert int(trace_id, 16) != 0
    assert int(span_id, 16) != 0
    assert int(flags, 16) & 0x01 == 0  # not sampled (other bits, e.g. "random id", may be set)


def test_a_sampled_caller_is_recorded_and_passed_on_as_sampled() -> None:
    tracer = api_tracer(Settings(otlp_endpoint=None))
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = extract({"traceparent": incoming})
    with tracer.start_as_current_span("POST /events", context=context) as span:
        assert span.is_recording()
        carrier: dict[str, str] = {}
        inject(carrier)
    assert carrier["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert carrier["traceparent"].endswith("-01")


def test_request_steps_get_child_spans_only_under_a_recorded_request() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    sampled = extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})

    recorded = tracer.start_as_current_span("GET /recommend/{user_id}", context=sampled)
    with recorded as request, child_span(tracer, "redis user_state", kind=SpanKind.CLIENT) as step:
        assert step.is_recording()
    not_recorded = tracer.start_as_current_span("GET /recommend/{user_id}")
    with not_recorded as unsampled, child_span(tracer, "qdrant search") as skipped:
        assert skipped is INVALID_SPAN
        assert trace.get_current_span() is unsampled  # nothing entered

    finished = {span.name: span for span in exporter.get_finished_spans()}
    assert set(finished) == {"GET /recommend/{user_id}", "redis user_state"}
    parent = finished["redis user_state"].parent
    assert parent is not None
    assert parent.span_id == request.get_span_context().span_id


async def current_span_during(
    middleware_tracer: trace.Tracer, method: str, headers: list[tuple[bytes, bytes]]
) -> tuple[trace.Span, bool]:
    """The span the app sees as current while ObservabilityMiddleware serves one request, and
    whether it was recording then (an ended span no longer is)."""
    seen: list[tuple[trace.Span, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        seen.append((span, span.is_recording()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "method": method, "path": "/x", "headers": headers}
    await ObservabilityMiddleware(app, middleware_tracer)(scope, receive, send)
    return seen[0]


SAMPLED_PARENT = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


async def test_with_tracing_off_only_reads_without_a_caller_go_without_a_span() -> None:
    tracer = api_tracer(Settings(otlp_endpoint=None))
    assert not samples_new_traces(tracer)
    read, _ = await current_span_during(tracer, "GET", [(b"host", b"x")])
    assert read is INVALID_SPAN
    write, recording = await current_span_during(tracer, "POST", [(b"host", b"x")])
    assert write.get_span_context().is_valid  # POST /events hands its trace id to Kafka
    assert not recording
    _, traced_read_recording = await current_span_during(tracer, "GET", SAMPLED_PARENT)
    assert traced_read_recording


async def test_with_tracing_on_every_read_is_recorded() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert samples_new_traces(tracer)
    _, recording = await current_span_during(tracer, "GET", [(b"host", b"x")])
    assert recording
