"""Metrics and traces through the OpenTelemetry API (which flyte installs): without an SDK configured,
every call here is a no-op.

Imported where first needed (a wait starts, a server starts), never by ``import flyteplugins.hitl``:
the API's own import costs more than the rest of the package. Attributes are few and bounded: the
event's name (never its request id) on metrics, a route and a status class on HTTP requests.

Traces: one span per wait, ``hitl.wait <name>``, from the event's creation to the wait's return, a
child of whatever context was current at creation; its events say what happened (``created``,
``notified``, ``vote``, ``answered``, ``refused``, ``woken``, ``expired``, ``default used``). The
request record carries that span's context (`carrier`), so a server's handling of an answer is a
span linked to it (`answer_span`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from importlib import metadata
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, TraceFlags

Record = dict[str, Any]

_SCOPE = "flyteplugins.hitl"
try:
    _VERSION = metadata.version("flyteplugins-hitl")
except metadata.PackageNotFoundError:  # run from a source tree
    _VERSION = "0"

_meter = metrics.get_meter(_SCOPE, _VERSION)
_tracer = trace.get_tracer(_SCOPE, _VERSION)

waiting = _meter.create_up_down_counter(
    "hitl.events.waiting", unit="{event}", description="Waits running now, by event name"
)
answers = _meter.create_counter(
    "hitl.answers",
    unit="{answer}",
    description="Outcomes the waits took, by how they came (via) and what came of them (outcome)",
)
decision_duration = _meter.create_histogram(
    "hitl.decision.duration", unit="s", description="From an event's creation to its decision: the people's time"
)
wake_duration = _meter.create_histogram(
    "hitl.wake.duration", unit="s", description="From a stored outcome to the wait returning it"
)
http_requests = _meter.create_counter(
    "hitl.http.server.requests",
    unit="{request}",
    description="Requests a form server answered, by route and status class",
)
storage_errors = _meter.create_counter(
    "hitl.storage.errors", unit="{error}", description="Storage operations that failed, by operation"
)

#: How an answer came, as the metrics name it.
VIAS = ("form", "json", "slack", "cli", "storage", "batch")


def via(response: Mapping[str, Any]) -> str:
    """How `response` came, as one of `VIAS`: a program's answer straight to the root is "storage"."""
    claimed = str(response.get("via", ""))
    if claimed in ("form", "json", "slack", "cli", "batch"):
        return claimed
    return "storage" if response.get("transport", "storage") == "storage" else "json"


def seconds(utc_text: object) -> float | None:
    """Seconds since the epoch of a stored UTC timestamp, or None if it is not one."""
    try:
        return datetime.fromisoformat(str(utc_text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _ns(utc_text: object) -> int | None:
    at = seconds(utc_text)
    return None if at is None else int(at * 1e9)


def start_wait_span(name: str, request_id: str, type_name: str, quorum: int, created_at: str) -> Span:
    """The span of one wait on an event, started at the event's creation, a child of the current context."""
    start = _ns(created_at)
    span = _tracer.start_span(
        f"hitl.wait {name}",
        kind=SpanKind.INTERNAL,
        attributes={
            "hitl.request_id": request_id,
            "hitl.event.name": name,
            "hitl.type": type_name,
            "hitl.quorum": quorum,
        },
        start_time=start,
    )
    span.add_event("created", timestamp=start)
    return span


def carrier(span: Span) -> Record | None:
    """`span`'s context as a request record keeps it (None when nothing records spans)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "flags": int(context.trace_flags),
    }


def _context(stored: object) -> SpanContext | None:
    if not isinstance(stored, dict):
        return None
    try:
        context = SpanContext(
            int(str(stored["trace_id"]), 16),
            int(str(stored["span_id"]), 16),
            is_remote=True,
            trace_flags=TraceFlags(int(stored.get("flags", 1)) & 0xFF),
        )
    except (KeyError, ValueError, TypeError):
        return None
    return context if context.is_valid else None


def links(request: Mapping[str, Any]) -> list[Link]:
    """A link to the wait span the request record names, if it names one."""
    context = _context(request.get("trace"))
    return [Link(context)] if context is not None else []


@contextlib.contextmanager
def answer_span(request: Mapping[str, Any], how: str) -> Iterator[Span]:
    """A server's handling of one answer to `request`, linked to the wait's span."""
    with _tracer.start_as_current_span(
        f"hitl.answer {request.get('event_name')}",
        kind=SpanKind.SERVER,
        links=links(request),
        attributes={"hitl.request_id": str(request.get("request_id")), "hitl.via": how},
    ) as span:
        yield span


def outcome(span: Span, request: Mapping[str, Any], response: Mapping[str, Any], returned_at: float) -> None:
    """Record the outcome a wait returns: its span events and attributes, the answer count and durations."""
    name = str(request.get("event_name"))
    if response.get("status") == "expired":
        kind = "default used" if response.get("default_applied") else "expired"
        span.add_event(kind, timestamp=_ns(response.get("expired_at")))
        answers.add(1, {"hitl.event.name": name, "via": "storage", "outcome": kind})
        return
    how = via(response)
    for vote in response.get("votes") or ():
        span.add_event(
            "vote", {"hitl.vote.value": bool(vote.get("value") is True)}, timestamp=_ns(vote.get("voted_at"))
        )
    span.add_event("answered", {"hitl.via": how}, timestamp=_ns(response.get("answered_at")))
    span.set_attribute("hitl.via", how)
    answers.add(1, {"hitl.event.name": name, "via": how, "outcome": "answered"})
    answered, created = seconds(response.get("answered_at")), seconds(request.get("created_at"))
    if answered is not None and created is not None:
        decision_duration.record(max(0.0, answered - created), {"hitl.event.name": name})
    if answered is not None:
        wake_duration.record(max(0.0, returned_at - answered), {"hitl.event.name": name})


def refused(span: Span, request: Mapping[str, Any], response: Mapping[str, Any], error: str) -> None:
    """Record that the task's own type refused the answer `response`."""
    span.add_event("refused", {"hitl.error": error[:200]})
    answers.add(1, {"hitl.event.name": str(request.get("event_name")), "via": via(response), "outcome": "refused"})


def http_request(route: str, status: int) -> None:
    http_requests.add(1, {"http.route": route, "http.status_class": f"{status // 100}xx"})


def storage_error(operation: str) -> None:
    storage_errors.add(1, {"operation": operation})


def export(metrics_port: int | None, host: str) -> str | None:
    """Set up export for ``hitl serve``, with the optional ``flyteplugins-hitl[otel]`` packages: a
    Prometheus ``/metrics`` on `metrics_port` (its own port, never the form port), and OTLP when an
    OTLP exporter is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a signal's own) is set. Returns
    the metrics URL, or None. Raises `ConfigurationError` when a metrics port is asked for without the extra."""
    import os

    from ._errors import ConfigurationError

    otlp = any(k.startswith("OTEL_EXPORTER_OTLP_") and k.endswith("ENDPOINT") for k in os.environ)
    if metrics_port is None and not otlp:
        return None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        if metrics_port is None:
            return None
        raise ConfigurationError(
            f"a metrics port ({metrics_port}) needs OpenTelemetry's SDK: pip install 'flyteplugins-hitl[otel]'"
        ) from None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "hitl-form-server")})
    readers: list[MetricReader] = []
    url = None
    if metrics_port is not None:
        try:
            import prometheus_client
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
        except ImportError:
            raise ConfigurationError(
                f"a metrics port ({metrics_port}) needs the Prometheus exporter: pip install 'flyteplugins-hitl[otel]'"
            ) from None
        readers.append(PrometheusMetricReader())
        try:
            server, _ = prometheus_client.start_http_server(metrics_port, addr=host)
        except OSError as e:
            raise ConfigurationError(f"cannot serve metrics on {host}:{metrics_port}: {e.strerror or e}") from None
        url = f"http://{host}:{server.server_address[1]}/metrics"
    tracer_provider = TracerProvider(resource=resource)
    if otlp:
        import importlib

        otlp_http = "opentelemetry.exporter.otlp.proto.http"
        try:  # not a dependency, not even of the extra: used when installed
            metric_exporter = importlib.import_module(f"{otlp_http}.metric_exporter")
            span_exporter = importlib.import_module(f"{otlp_http}.trace_exporter")
        except ImportError:
            pass  # Prometheus only
        else:
            readers.append(PeriodicExportingMetricReader(metric_exporter.OTLPMetricExporter()))
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter.OTLPSpanExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    trace.set_tracer_provider(tracer_provider)
    return url
