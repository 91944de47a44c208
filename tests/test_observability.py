"""Operations: Prometheus metrics at /metrics, request ids in headers and log lines, JSON logs, and
OpenTelemetry traces (SDK in-memory exporter) of one chat message across the router double and the
real genai-protocol 1.0.9 master agent."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from genai_backend.app import create_app
from genai_backend.auth.middleware import USER, auth
from genai_backend.config import Settings
from genai_backend.observability import tracing
from genai_backend.observability.logs import JsonFormatter
from tests.agents_helpers import RunningAgent, run_master_agent
from tests.bus_fixtures import backend_on_router
from tests.chat_fixtures import chat_frame, open_socket, receive_reply, setup_llm
from tests.conftest import PASSWORD, User, make_user
from tests.router_double import MASTER_SERVER_ML, RunningRouter
from tests.service_process import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: TestClient, **kwargs: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics", **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain")
    return samples(await resp.text())


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- metrics -------------------------------------------------------------------------------------

async def test_metrics_count_requests_by_route_template_never_raw_path(client: TestClient, user: User) -> None:
    agent_id = str(uuid.uuid4())
    before = await scrape(client)
    resp = await client.get(f"/api/agents/{agent_id}", headers=user.headers)
    assert resp.status == 400
    await client.get("/api/agents", headers=user.headers)
    await client.get("/api/agents/", headers=user.headers)
    await client.get("/no/such/path")
    text = await (await client.get("/metrics")).text()
    after = samples(text)
    assert agent_id not in text
    route = {"method": "GET", "route": "/api/agents/{agent_id}"}
    assert value(after, "genai_http_requests_total", **route, status="400") - \
        value(before, "genai_http_requests_total", **route, status="400") == 1
    # Both slash spellings are one route; an unknown path is one label, not one per path.
    listing = {"method": "GET", "route": "/api/agents", "status": "200"}
    assert value(after, "genai_http_requests_total", **listing) - value(before, "genai_http_requests_total",
                                                                       **listing) == 2
    assert value(after, "genai_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    buckets = {labels for (name, labels) in after if name == "genai_http_request_duration_seconds_bucket"
               and dict(labels).get("route") == "/api/agents/{agent_id}"}
    assert {dict(b)["le"] for b in buckets} >= {"0.001", "10.0", "+Inf"}
    # Live values read at scrape time.
    assert value(after, "genai_db_pool_max") == 5
    assert value(after, "genai_db_pool_size") >= 1
    assert value(after, "genai_http_requests_in_flight") == 1  # this scrape
    assert value(after, "genai_router_state", state="disabled") == 1
    assert value(after, "genai_db_pool_acquire_duration_seconds_count") > \
        value(before, "genai_db_pool_acquire_duration_seconds_count")
    # The second listing was answered from the catalogue cache.
    assert value(after, "genai_catalogue_cache_misses_total") - value(before, "genai_catalogue_cache_misses_total") == 1
    assert value(after, "genai_catalogue_cache_hits_total") - value(before, "genai_catalogue_cache_hits_total") == 1


async def test_metrics_token_is_required_when_set(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(replace(settings, metrics_token="scrape-secret")))
    resp = await client.get("/metrics")
    assert resp.status == 401 and await resp.json() == {"detail": "Not authenticated"}
    resp = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    await scrape(client, headers={"Authorization": "Bearer scrape-secret"})


async def test_metrics_disabled_has_no_endpoint_and_counts_nothing(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(replace(settings, metrics_enabled=False)))
    resp = await client.get("/metrics")
    assert resp.status == 404
    assert resp.headers["X-Request-ID"]


async def test_login_attempts_are_counted_by_outcome(client: TestClient) -> None:
    before = await scrape(client)
    resp = await client.post("/api/register", json={"username": "counted", "password": PASSWORD})
    assert resp.status == 200
    for password in (PASSWORD, "wrong password"):
        await client.post("/api/login/access-token", data={"username": "counted", "password": password})
    after = await scrape(client)
    for outcome in ("success", "failure"):
        assert value(after, "genai_login_attempts_total", outcome=outcome) - \
            value(before, "genai_login_attempts_total", outcome=outcome) == 1
    assert ("genai_login_attempts_total", (("outcome", "throttled"),)) in after
    assert value(after, "genai_password_hash_queue") == 0


async def test_throttled_logins_are_counted(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(replace(settings, login_max_failures_per_account=1)))
    resp = await client.post("/api/register", json={"username": "throttled", "password": PASSWORD})
    assert resp.status == 200
    before = await scrape(client)
    statuses = [(await client.post("/api/login/access-token",
                                   data={"username": "throttled", "password": "wrong password"})).status
                for _ in range(3)]
    assert statuses == [400, 429, 429]
    after = await scrape(client)
    assert value(after, "genai_login_attempts_total", outcome="throttled") - \
        value(before, "genai_login_attempts_total", outcome="throttled") == 2


async def test_chat_turn_metrics_and_open_sockets(aiohttp_client: Any, settings: Settings, router: RunningRouter,
                                                  password_hash: str) -> None:
    client = await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)
    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    before = await scrape(client)
    assert value(before, "genai_router_connected") == 1 and value(before, "genai_router_session_leader") == 1
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hello"))
    answer = (await receive_reply(ws))["response"]
    assert answer["response"]["is_success"] is False  # no master agent on the router
    after = await scrape(client)
    assert value(after, "genai_chat_sockets_open") == 1
    for name, labels, delta in (("genai_chat_turns_started_total", {}, 1),
                                ("genai_chat_turns_finished_total", {"result": "error"}, 1),
                                ("genai_master_agent_absent_total", {}, 1),
                                ("genai_master_agent_duration_seconds_count", {}, 1)):
        assert value(after, name, **labels) - value(before, name, **labels) == delta, name
    await ws.close()


async def test_discovery_failures_and_job_runs_are_counted(client: TestClient, user: User) -> None:
    from genai_backend.jobs import run_periodically

    before = await scrape(client)
    resp = await client.post("/api/mcp/servers", headers=user.headers, json={"server_url": "http://127.0.0.1:1/mcp"})
    assert resp.status == 400, await resp.text()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        if runs == 3:
            raise asyncio.CancelledError  # ends the loop, like shutdown

    with pytest.raises(asyncio.CancelledError):
        await run_periodically("test job", flaky, first_delay=0, period=0)
    after = await scrape(client)
    assert value(after, "genai_discovery_failures_total", kind="mcp") - \
        value(before, "genai_discovery_failures_total", kind="mcp") == 1
    for outcome in ("failure", "success"):
        assert value(after, "genai_job_runs_total", job="test_job", outcome=outcome) - \
            value(before, "genai_job_runs_total", job="test_job", outcome=outcome) == 1
    assert value(after, "genai_job_duration_seconds_count", job="test_job") - \
        value(before, "genai_job_duration_seconds_count", job="test_job") == 3


# --- request ids and log lines -------------------------------------------------------------------

class _Capture:
    """A root handler with the JSON formatter, as LOG_FORMAT=json installs it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def json_logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture.handler)
    logging.captureWarnings(True)
    try:
        yield capture
    finally:
        logging.captureWarnings(False)
        root.removeHandler(capture.handler)


class _NoisyView(web.View):
    URL_PATH = "/test/noisy"

    @auth(USER)
    async def get(self) -> web.Response:
        logging.getLogger("tests.noisy").warning("something to say")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library complains", UserWarning, stacklevel=1)
        return web.json_response({})


async def test_request_id_header_kept_or_made_and_in_json_log_lines(aiohttp_client: Any, settings: Settings,
                                                                   json_logs: _Capture, password_hash: str) -> None:
    app = create_app(settings)
    app.router.add_view(_NoisyView.URL_PATH, _NoisyView)
    client = await aiohttp_client(app)
    user = await make_user(client, password_hash)
    resp = await client.get("/test/noisy", headers={**user.headers, "X-Request-ID": "req-42.abc"})
    assert resp.status == 200 and resp.headers["X-Request-ID"] == "req-42.abc"
    mine = [line for line in json_logs.lines if line["request_id"] == "req-42.abc"]
    assert [(line["logger"], line["message"]) for line in mine][:1] == [("tests.noisy", "something to say")]
    assert any(line["logger"] == "py.warnings" and "a library complains" in line["message"] for line in mine)
    for line in mine:
        assert set(line) >= {"timestamp", "level", "logger", "message", "request_id", "user_id", "trace_id"}
        assert line["user_id"] == user.id and line["trace_id"] is None
    # An unusable incoming id is replaced; every answer has one, errors included.
    for headers in ({"X-Request-ID": "bad id with spaces"}, {"X-Request-ID": "x" * 200}, {}):
        resp = await client.get("/api/agents/", headers=headers)
        assert resp.status == 401
        made = resp.headers["X-Request-ID"]
        assert made != headers.get("X-Request-ID") and len(made) == 32
    ws = await client.ws_connect(f"/frontend/ws?token={user.token}", headers={"X-Request-ID": "socket-1"})
    assert ws._response.headers["X-Request-ID"] == "socket-1"
    await ws.close()


def test_log_format_json_makes_every_line_of_the_process_json(database_dsn: str, _truncate_sql: str,
                                                                tmp_path: Path) -> None:
    """The real process: start-up, a request that logs, shutdown; every stderr line is one object."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SQLALCHEMY_ASYNC_DATABASE_URI": database_dsn, "SECRET_KEY": uuid.uuid4().hex,
           "PORT": str(port), "HOST": "127.0.0.1", "ROUTER_WS_URL": "ws://127.0.0.1:1/ws", "LOG_FORMAT": "json",
           "MASTER_BE_API_KEY": "observability-test-key",
           "DEFAULT_FILES_FOLDER_NAME": str(tmp_path / "files"), "GENAI_DATA_DIR": str(tmp_path / "data")}
    stderr = tmp_path / "service.log"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "genai_backend"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        asyncio.run(_register_and_log(f"http://127.0.0.1:{port}"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert any("serving on" in line["message"] for line in lines)
    assert any(line["logger"] == "genai_backend.bus.session" for line in lines)  # router unreachable
    [failed] = [line for line in lines if line["request_id"] == "mcp-req-1"]
    assert failed["logger"] == "genai_backend.api.mcp_servers" and failed["user_id"]
    assert failed["level"] == "INFO" and "MCP registration of" in failed["message"]


async def _register_and_log(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        await wait_until_ready(http, base)
        username = f"json_{uuid.uuid4().hex[:8]}"
        async with http.post(f"{base}/api/register", json={"username": username, "password": PASSWORD}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/login/access-token", data={"username": username, "password": PASSWORD}) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "mcp-req-1"}
        async with http.post(f"{base}/api/mcp/servers", headers=headers,
                             json={"server_url": "http://127.0.0.1:1/mcp"}) as resp:
            assert resp.status == 400, await resp.text()
            assert resp.headers["X-Request-ID"] == "mcp-req-1"


# --- traces --------------------------------------------------------------------------------------

@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def _hex(number: int, digits: int) -> str:
    return format(number, f"0{digits}x")


async def test_http_span_continues_incoming_traceparent_with_db_spans(spans: InMemorySpanExporter,
                                                                      aiohttp_client: Any, settings: Settings,
                                                                      password_hash: str) -> None:
    client = await aiohttp_client(create_app(settings))
    user = await make_user(client, password_hash)
    spans.clear()
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    resp = await client.get("/api/agents/", headers={**user.headers,
                                                     "traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert resp.status == 200
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.name == "GET /api/agents"]
    assert _hex(server.context.trace_id, 32) == trace_id and _hex(server.parent.span_id, 16) == parent_id
    assert server.attributes["http.route"] == "/api/agents" and server.attributes["http.response.status_code"] == 200
    statements = [s for s in finished if s.name.startswith("db ")]
    assert statements and all(_hex(s.context.trace_id, 32) == trace_id for s in statements)
    assert all(s.attributes["db.system.name"] == "postgresql" for s in statements)


async def _wait_spans(spans: InMemorySpanExporter, trace_id: int, predicate: Any) -> list[ReadableSpan]:
    deadline = time.monotonic() + 5
    while True:
        mine = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        if predicate(mine):
            return mine
        assert time.monotonic() < deadline, [s.name for s in mine]
        await asyncio.sleep(0.02)


async def test_one_chat_message_is_one_trace_across_the_router(spans: InMemorySpanExporter, aiohttp_client: Any,
                                                               settings: Settings, router: RunningRouter,
                                                               running: list[RunningAgent],
                                                               password_hash: str) -> None:
    client = await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)
    # The real genai-protocol 1.0.9 master-agent helper: its bound function takes the payload keys
    # as keyword arguments, so a trace carrier among them would make every call fail.
    master = await run_master_agent(router.url, api_base_url=str(client.make_url("/")), call_back=True,
                                    send_logs=True)
    running.append(master)
    await router.double.wait_for_client(MASTER_SERVER_ML)
    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    ws = await open_socket(client, user)
    before = await scrape(client)
    spans.clear()
    await ws.send_json(chat_frame("trace me"))
    answer = (await receive_reply(ws, timeout=10))["response"]
    assert answer["response"] == {"agents_trace": [], "response": "echo: trace me", "is_success": True}
    trace_id = int(answer["trace_id"], 16)
    assert len(master.calls) == 1 and master.calls[0].request_id == answer["request_id"]

    def complete(mine: list[ReadableSpan]) -> bool:
        names = {s.name for s in mine}
        return {"chat turn", "invoke master_server_ml"} <= names and any(
            e.name == "agent_log" for s in mine for e in s.events)

    mine = await _wait_spans(spans, trace_id, complete)
    [turn] = [s for s in spans.get_finished_spans() if s.name == "chat turn"]
    assert turn.context.trace_id == trace_id and turn.parent is None
    assert turn.attributes["genai.request_id"] == answer["request_id"]
    [invocation] = [s for s in mine if s.name == "invoke master_server_ml"]
    assert invocation.parent.span_id == turn.context.span_id
    statements = [s for s in mine if s.name.startswith("db ")]
    assert len(statements) >= 2  # the turn's start and its stored answer
    # The invocation frame the router delivered to the master agent carries the invocation's context
    # beside request_id and session_id, and nothing new in the payload.
    [frame] = [f for f in router.double.frames_to(MASTER_SERVER_ML) if "request_payload" in f]
    assert set(frame["request_payload"]) == {"session_id", "user_id", "configs", "files", "timestamp"}
    metadata = frame["request_metadata"]
    assert metadata["request_id"] == answer["request_id"]
    version, carried_trace, carried_span, flags = metadata["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert carried_trace == answer["trace_id"] and carried_span == _hex(invocation.context.span_id, 16)
    # The master agent's own log lines (sent back through the router) are events on this trace.
    events = [e for s in mine for e in s.events if e.name == "agent_log"]
    assert all(e.attributes["genai.agent"] == MASTER_SERVER_ML for e in events)
    assert any("invoked_by" in str(e.attributes["log.message"]) for e in events)
    assert "sk-test" not in json.dumps([dict(e.attributes) for e in events])  # the api_key is redacted
    # Those log lines also reached the user's socket.
    after = await scrape(client)
    assert value(after, "genai_agent_log_frames_pushed_total") > value(before, "genai_agent_log_frames_pushed_total")
    assert value(after, "genai_agent_log_frames_dropped_total") == value(before, "genai_agent_log_frames_dropped_total")
    await ws.close()


def test_tracing_off_imports_no_sdk() -> None:
    code = ("import sys\n"
            "from genai_backend.app import create_app\n"
            "from genai_backend.config import Settings\n"
            "create_app(Settings(secret_key='k'))\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_otlp_endpoint_from_standard_variables() -> None:
    assert tracing.otlp_endpoint({}) is None
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/traces"
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}) == "http://t/x"
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "none"}) is None


async def test_otlp_http_export_from_the_standard_variables(aiohttp_client: Any, aiohttp_server: Any,
                                                            settings: Settings) -> None:
    """The configured path end to end: OTEL_* in the settings → spans POSTed as OTLP/HTTP protobuf."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(export)
        return web.Response(body=b"", content_type="application/x-protobuf")

    sink = web.Application()
    sink.router.add_post("/v1/traces", traces)
    collector = await aiohttp_server(sink)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": str(collector.make_url("/")), "OTEL_SERVICE_NAME": "obs-test"}
    client = await aiohttp_client(create_app(replace(settings, otel=otel)))
    assert tracing.enabled()
    assert (await client.get("/health")).status == 200
    await client.close()  # cleanup flushes the exporter
    assert not tracing.enabled()
    names, services = set(), set()
    for export in received:
        for resource_spans in export.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            names |= {s.name for scope in resource_spans.scope_spans for s in scope.spans}
    assert "GET /health" in names and services == {"obs-test"}
