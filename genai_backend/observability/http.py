"""The one middleware for request ids, HTTP metrics and server spans; `GET /metrics`; the app wiring."""
from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from genai_backend.config import SETTINGS, Settings
from genai_backend.errors import NOT_AUTHENTICATED, UnauthorizedError
from genai_backend.observability import logs, metrics, tracing

REQUEST_LOG = "genai.request_log"
HEADER = "X-Request-ID"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# (method, resource, status) -> the cells to count in: one dict probe, no route string built.
_Children = tuple[metrics.LoopCounter, metrics.LoopHistogram]
_CHILDREN: dict[tuple[str, Any, int], _Children] = {}


def route_of(request: web.Request) -> str:
    """The route template (`/api/agents/{agent_id}`), one label for both slash spellings."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical.rstrip("/") or "/"


def _children(request: web.Request, status: int) -> _Children:
    method = request.method if request.method in _METHODS else "OTHER"
    key = (method, request.match_info.route.resource, status)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metrics.http_cells(method, route_of(request), status)
    return found


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, asyncio.CancelledError):
        return 499  # the client went away first (nginx's convention)
    return exc.status if isinstance(exc, web.HTTPException) else 500


def observe_middleware(settings: Settings) -> Middleware:
    """Outermost: every answer, the CORS preflight and the error middleware's included."""
    count = settings.metrics_enabled

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        current = logs.RequestLog(logs.request_id_from(request.headers.get(HEADER)))
        request[REQUEST_LOG] = current
        token = logs.CURRENT.set(current)
        metrics.LIVE.in_flight += 1
        started = time.perf_counter()
        status = 500
        try:
            if tracing.TRACER is None:
                response = await handler(request)
            else:
                with tracing.http_span(request, route_of(request)):
                    try:
                        response = await handler(request)
                    except BaseException as exc:
                        tracing.end_http_span(_status_of(exc))
                        raise
                    tracing.end_http_span(response.status)
            status = response.status
            return response
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            metrics.LIVE.in_flight -= 1
            logs.CURRENT.reset(token)
            if count:
                requests, duration = _children(request, status)
                requests.value += 1
                if status != 101:  # a WebSocket's duration is its lifetime, not a latency
                    duration.observe(time.perf_counter() - started)

    return observe


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A signal: file and WebSocket responses are prepared inside handlers, after nothing else runs.
    current = request.get(REQUEST_LOG)
    if current is not None:
        response.headers[HEADER] = current.request_id


class MetricsView(web.View):
    URL_PATH = "/metrics"

    async def get(self) -> web.Response:
        token = self.request.app[SETTINGS].metrics_token
        if token:
            expected = f"Bearer {token}".encode()
            given = self.request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise UnauthorizedError(NOT_AUTHENTICATED)
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def observability_ctx(app: web.Application) -> AsyncIterator[None]:
    """Register this app's live values for scraping; start (and at the end flush) the OTLP exporter."""
    settings = app[SETTINGS]
    started = not tracing.enabled() and tracing.start_otlp(settings.otel)
    if settings.metrics_enabled:
        metrics.APP_VALUES.apps.append(app)
    try:
        yield
    finally:
        if app in metrics.APP_VALUES.apps:
            metrics.APP_VALUES.apps.remove(app)
        if started:
            await asyncio.to_thread(tracing.shutdown)


def setup_observability(app: web.Application, settings: Settings) -> None:
    app.on_response_prepare.append(add_request_id)
    if settings.metrics_enabled:
        app.router.add_view(MetricsView.URL_PATH, MetricsView)
