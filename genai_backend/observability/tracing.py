"""OpenTelemetry traces, off unless configured: nothing of the SDK is imported until tracing starts.

While off, every helper here is one check of a module global and returns a shared no-op context
manager, so neither start-up nor the hot paths pay for tracing.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

# The opentelemetry Tracer while tracing is on; None while it is off.
TRACER: Any = None
_PROVIDER: Any = None
_PROPAGATOR: Any = None
_QUIET: Any = None  # context key: statements of a WebSocket handshake are not traced
_NOOP = contextlib.nullcontext()

# Chat turns by request id, so agent log events that come back through the router find their trace.
_TURNS: dict[str, Any] = {}
# Span contexts of finished turns: an agent's log may arrive after the answer. Bounded.
_RECENT: OrderedDict[str, Any] = OrderedDict()
MAX_RECENT = 1024
MAX_EVENT_TEXT = 4096


def enabled() -> bool:
    return TRACER is not None


def use_provider(provider: Any) -> None:
    """Trace into `provider` (an SDK TracerProvider); None turns tracing off. Tests use it directly."""
    global TRACER, _PROVIDER, _PROPAGATOR, _QUIET
    if provider is None:
        TRACER = _PROVIDER = None
        _TURNS.clear()
        _RECENT.clear()
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR = TraceContextTextMapPropagator()
    _QUIET = _QUIET or context.create_key("genai-quiet")
    _PROVIDER = provider
    TRACER = provider.get_tracer("genai_backend")


def otlp_endpoint(otel: Mapping[str, str]) -> str | None:
    """Where spans go (OTLP over HTTP), from the standard variables; None means tracing stays off."""
    if otel.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if otel.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in {"none", ""}:
        return None
    traces = otel.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    base = otel.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/traces" if base else None


def start_otlp(otel: Mapping[str, str]) -> bool:
    """Start exporting to the configured OTLP/HTTP endpoint; False when not configured."""
    endpoint = otlp_endpoint(otel)
    if endpoint is None:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": otel.get("OTEL_SERVICE_NAME", "") or "genai-backend"})
    provider = TracerProvider(resource=resource)
    # The batch processor exports from its own thread: the event loop never waits for the collector.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    use_provider(provider)
    log.info("tracing on: OTLP/HTTP to %s", endpoint)
    return True


def shutdown() -> None:
    """Flush and stop the exporter (blocking: call it in a thread)."""
    provider = _PROVIDER
    use_provider(None)
    if provider is not None:
        provider.shutdown()


# --- spans -----------------------------------------------------------------------------------------

def http_span(request: Any, route: str) -> Any:
    """The server span of one HTTP request, continuing an incoming `traceparent`."""
    from opentelemetry import context
    from opentelemetry.trace import SpanKind

    if request.headers.get("Upgrade", "").lower() == "websocket":
        # A chat socket lives for hours; each turn on it is a trace of its own instead.
        return _attached(context.set_value(_QUIET, True))
    parent = _PROPAGATOR.extract(request.headers)
    return TRACER.start_as_current_span(
        f"{request.method} {route}", context=parent, kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route, "url.path": request.path})


@contextlib.contextmanager
def _attached(ctx: Any) -> Iterator[None]:
    from opentelemetry import context

    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def end_http_span(status: int) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def span(name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False) -> Any:
    """A child span of whatever is current; a shared no-op while tracing is off."""
    if TRACER is None:
        return _NOOP
    from opentelemetry.trace import SpanKind

    return TRACER.start_as_current_span(name, kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
                                        attributes=dict(attributes or {}))


def chat_turn() -> Any:
    """The span of one message on a chat socket: the root of that message's trace."""
    if TRACER is None:
        return _NOOP
    return _chat_turn()


@contextlib.contextmanager
def _chat_turn() -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    # A fresh context, not the socket's: no parent, and the handshake's quiet flag is not inherited.
    with TRACER.start_span("chat turn", context=Context(), kind=SpanKind.SERVER) as turn:
        with _attached(trace.set_span_in_context(turn, Context())):
            yield turn


@contextlib.contextmanager
def _turn_registered(request_id: str, current: Any) -> Iterator[None]:
    _TURNS[request_id] = current
    try:
        yield
    finally:
        _TURNS.pop(request_id, None)
        _RECENT[request_id] = current.get_span_context()
        while len(_RECENT) > MAX_RECENT:
            _RECENT.popitem(last=False)


def turn_request(request_id: Any) -> Any:
    """Name the current chat turn's request, so the agent logs of that request land on its trace."""
    if TRACER is None:
        return _NOOP
    from opentelemetry import trace

    current = trace.get_current_span()
    current.set_attribute("genai.request_id", str(request_id))
    return _turn_registered(str(request_id), current)


def agent_log(request_id: str, agent: str, level: str, message: str) -> None:
    """An agent's log line for `request_id`, as an event of that request's chat turn."""
    if TRACER is None:
        return
    attributes = {"genai.agent": agent, "log.level": level, "log.message": message[:MAX_EVENT_TEXT]}
    turn = _TURNS.get(request_id)
    if turn is not None:
        turn.add_event("agent_log", attributes)
        return
    finished = _RECENT.get(request_id)
    if finished is not None:
        # The turn span has ended: a short child span carries the event on the same trace.
        from opentelemetry import trace

        parent = trace.set_span_in_context(trace.NonRecordingSpan(finished))
        with TRACER.start_as_current_span("agent log", context=parent) as late:
            late.add_event("agent_log", attributes)


def inject(carrier: dict[str, Any]) -> dict[str, Any]:
    """Add the current W3C trace context (`traceparent`, `tracestate`) to `carrier`; returns it."""
    if TRACER is not None:
        _PROPAGATOR.inject(carrier)
    return carrier


def trace_id() -> str | None:
    """The current trace id (32 hex digits), or None when nothing is traced."""
    if TRACER is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def record_query(record: Any) -> None:
    """asyncpg query logger: one span per statement, timed by asyncpg, under the caller's span.

    asyncpg calls it with `call_soon`, which runs it in a copy of the caller's context.
    """
    if TRACER is None:
        return
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    if context.get_value(_QUIET) or not trace.get_current_span().get_span_context().is_valid:
        return  # not part of a traced request (or a WebSocket handshake): no orphan root spans
    end = time.time_ns()
    text = record.query.strip()
    operation = text.split(None, 1)[0].upper() if text else "SQL"
    statement = TRACER.start_span(f"db {operation}", kind=SpanKind.CLIENT, start_time=end - int(record.elapsed * 1e9),
                                  attributes={"db.system.name": "postgresql", "db.operation.name": operation,
                                              "db.query.text": text[:MAX_EVENT_TEXT]})
    if record.exception is not None:
        statement.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    statement.end(end_time=end)
