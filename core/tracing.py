"""OpenTelemetry set-up shared by every process, and Kafka header propagation.

Without RECSYS_OTLP_ENDPOINT spans are still created through the API (cheap no-ops), so the
code path is the same with tracing on or off.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from core.settings import Settings

KafkaHeaders = Iterable[tuple[str, bytes]]


def setup_tracing(settings: Settings, service_name: str) -> None:
    """Install a tracer provider exporting to the configured OTLP endpoint, if any."""
    if not settings.otlp_endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


def context_from_headers(headers: KafkaHeaders | None) -> Context | None:
    """The trace context a producer put in Kafka headers (W3C traceparent), if any."""
    if not headers:  # most messages: skip the propagator altogether
        return None
    carrier = {k: v.decode("latin-1") for k, v in headers if isinstance(v, bytes)}
    if "traceparent" not in carrier:
        return None
    return extract(carrier)


def headers_with_context() -> list[tuple[str, bytes]]:
    """Kafka headers carrying the current trace context."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]
