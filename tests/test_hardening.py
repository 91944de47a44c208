"""Hostile input is a 4xx with a reason, never a 500 (issue: hardening §1, §2): each class at its mechanism."""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.limits import MAX_FILE_NAME_LENGTH, MAX_JSON_DEPTH, MAX_KEY_LENGTH, MAX_PAGE_SIZE, MAX_TEXT_LENGTH, MAX_URL_LENGTH
from tests.chat_fixtures import chat_frame, open_socket, receive_close, receive_frame, setup_llm
from tests.conftest import User, with_settings
from tests.test_jobs import refresh
from tests.tool_servers import UvicornServer, build_mcp, card_server

AGENTS = "/api/agents/register"
PROVIDER = "/api/llm/model/provider"
CONFIG = "/api/llm/model/config"
LISTS = ["/api/agents/", "/api/agents/active?agent_type=all", "/api/agentflows/", "/api/llm/model/configs",
         "/api/chats", "/user/files/metadata", "/api/mcp/servers"]


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def nested_text(depth: int) -> str:
    """`nested(depth)` as JSON text, written directly: json.dumps itself recurses."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def agent_body(**changes: Any) -> dict[str, Any]:
    return {"name": "deep", "description": "d", "input_parameters": {}, **changes}


async def status_and_body(resp: aiohttp.ClientResponse) -> tuple[int, Any]:
    return resp.status, await resp.json()


# ----- JSON depth -----------------------------------------------------------------------------------

async def test_body_nested_very_deep_is_422(client: TestClient, user: User) -> None:
    resp = await client.post(AGENTS, data=b"[" * 200_000, headers={**user.headers, "Content-Type": "application/json"})
    status, body = await status_and_body(resp)
    assert status == 422, body
    assert body["detail"][0]["type"] == "json_invalid"
    assert str(MAX_JSON_DEPTH) in body["detail"][0]["ctx"]["error"]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
async def test_input_parameters_nested_deep_is_422(client: TestClient, user: User, depth: int) -> None:
    body_text = json.dumps(agent_body(input_parameters="X")).replace('"X"', nested_text(depth))
    resp = await client.post(AGENTS, data=body_text, headers={**user.headers, "Content-Type": "application/json"})
    status, body = await status_and_body(resp)
    assert status == 422, body
    # As a JSON string (D14) the document is parsed by the same bounded parser.
    resp = await client.post(AGENTS, json=agent_body(input_parameters=nested_text(depth)), headers=user.headers)
    assert resp.status == 422, await resp.text()


async def test_nesting_at_the_limit_is_accepted(client: TestClient, user: User) -> None:
    # The body adds one level around input_parameters.
    resp = await client.post(AGENTS, json=agent_body(input_parameters=nested(MAX_JSON_DEPTH - 1)),
                             headers=user.headers)
    assert resp.status == 200, await resp.text()


async def test_provider_metadata_nested_deep_is_422(client: TestClient, user: User) -> None:
    body_text = '{"name": "p", "api_key": "k", "metadata": ' + nested_text(1000) + "}"
    resp = await client.post(PROVIDER, data=body_text, headers={**user.headers, "Content-Type": "application/json"})
    assert resp.status == 422, await resp.text()


async def test_socket_frame_nested_deep_is_an_error_frame(client: TestClient, user: User) -> None:
    ws = await open_socket(client, user)
    await ws.send_str("[" * 200_000)
    frame = await receive_frame(ws)
    assert frame["error"].startswith("Message validation failed. Details: Invalid JSON: nesting depth exceeds")
    await ws.send_str(json.dumps({**chat_frame("hi"), "files": "X"}).replace('"X"', nested_text(500)))
    frame = await receive_frame(ws)
    assert frame["error"].startswith("Message validation failed"), frame
    await ws.close()


# ----- string lengths -------------------------------------------------------------------------------

def too_long(body: Any, loc: list[Any], limit: int) -> None:
    assert {"type": "string_too_long", "loc": loc, "msg": f"String should have at most {limit} characters",
            "ctx": {"max_length": limit}}.items() <= body["detail"][0].items(), body


async def test_long_provider_name_is_string_too_long(client: TestClient, user: User) -> None:
    resp = await client.post(PROVIDER, json={"name": "p" * 50_000, "api_key": "k"}, headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422
    too_long(body, ["body", "name"], MAX_KEY_LENGTH)


@pytest.mark.parametrize("field", ["name", "model"])
async def test_long_config_name_or_model_is_string_too_long(client: TestClient, user: User, field: str) -> None:
    await setup_llm(client, user)
    config = {"name": "c", "model": "m", "provider": "openai", field: "x" * 50_000}
    resp = await client.post(CONFIG, json=config, headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422
    too_long(body, ["body", field], MAX_KEY_LENGTH)


@pytest.mark.parametrize("path", ["/api/mcp/servers", "/api/a2a/agents"])
async def test_long_server_url_is_string_too_long(client: TestClient, user: User, path: str) -> None:
    url = "http://127.0.0.1:9/" + "a" * 50_000
    resp = await client.post(path, json={"server_url": url}, headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422
    too_long(body, ["body", "server_url"], MAX_URL_LENGTH)


async def test_every_other_string_has_a_maximum(client: TestClient, user: User) -> None:
    resp = await client.post(AGENTS, json=agent_body(description="d" * (MAX_TEXT_LENGTH + 1)), headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422
    too_long(body, ["body", "description"], MAX_TEXT_LENGTH)


# ----- integers and page sizes -------------------------------------------------------------------

@pytest.mark.parametrize("path", LISTS)
async def test_limit_above_the_maximum_page_size_is_422(client: TestClient, user: User, path: str) -> None:
    sep = "&" if "?" in path else "?"
    resp = await client.get(f"{path}{sep}limit={MAX_PAGE_SIZE + 1}", headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422, body
    assert body["detail"][0]["type"] == "less_than_equal" and body["detail"][0]["ctx"] == {"le": MAX_PAGE_SIZE}
    resp = await client.get(f"{path}{sep}limit={MAX_PAGE_SIZE}", headers=user.headers)
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("name", ["limit", "offset"])
async def test_integer_with_thousands_of_digits_is_int_parsing(client: TestClient, user: User, name: str) -> None:
    resp = await client.get("/api/agents/", params={name: "9" * 5000}, headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422, body
    assert body["detail"][0]["type"] == "int_parsing" and body["detail"][0]["loc"] == ["query", name]


async def test_chat_history_per_page_is_bounded(client: TestClient, user: User) -> None:
    resp = await client.get("/api/chat", params={"session_id": str(uuid.uuid4()), "per_page": str(MAX_PAGE_SIZE + 1)},
                            headers=user.headers)
    assert resp.status == 422, await resp.text()


# ----- multipart ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type, data", [
    ("multipart/form-data", b"username=a&password=b"),
    ("multipart/form-data; boundary=xyz", b"garbage without any boundary"),
    ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"username\xff\xfe\"\r\n\r\n"
                                          b"a\r\n--xyz--\r\n"),
])
async def test_malformed_login_form_is_4xx(client: TestClient, content_type: str, data: bytes) -> None:
    resp = await client.post("/api/login/access-token", data=data, headers={"Content-Type": content_type})
    assert resp.status in (400, 422), await resp.text()
    assert "detail" in await resp.json()


@pytest.mark.parametrize("header", [
    b"Content-Disposition: form-data; name=\"file\"; filename=\"a\xff\xfe.txt\"\r\n",
    b"Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/pl\xffain\r\n",
])
async def test_non_utf8_part_header_on_upload_is_400(client: TestClient, user: User, db: asyncpg.Connection,
                                                     header: bytes) -> None:
    body = b"--xyz\r\n" + header + b"\r\nhello\r\n--xyz--\r\n"
    resp = await client.post("/files", data=body, headers={**user.headers,
                                                           "Content-Type": "multipart/form-data; boundary=xyz"})
    assert resp.status == 400, await resp.text()
    assert await resp.json() == {"detail": "There was an error parsing the body"}
    assert await db.fetchval("SELECT count(*) FROM files") == 0


async def test_long_file_name_is_string_too_long(client: TestClient, user: User) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="n" * MAX_FILE_NAME_LENGTH + ".txt")
    resp = await client.post("/files", data=form, headers=user.headers)
    status, body = await status_and_body(resp)
    assert status == 422
    too_long(body, ["body", "file"], MAX_FILE_NAME_LENGTH)


async def test_total_body_is_bounded_not_only_the_file(aiohttp_client: Any, settings: Settings, user: User,
                                                       db: asyncpg.Connection) -> None:
    small = await aiohttp_client(create_app(with_settings(settings, max_upload_bytes=1024 * 1024)))
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="one.txt")
    form.add_field("padding", b"p" * (3 * 1024 * 1024), filename="two.bin")
    resp = await small.post("/files", data=form, headers=user.headers)
    assert resp.status == 413, await resp.text()
    assert await db.fetchval("SELECT count(*) FROM files") == 0
    assert list(settings.files_dir.iterdir()) == []


async def test_client_reset_mid_upload_is_a_client_abort(settings: Settings, user: User,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    # Served as in production (run_app): a lost client does not cancel the handler, it sees the reset.
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    caplog.set_level(logging.INFO)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /files HTTP/1.1\r\nHost: x\r\nAuthorization: {user.headers['Authorization']}\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 10000000\r\n\r\n")
        writer.write(head.encode() + b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
                     b"\r\n" + b"a" * 100_000)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.transport.abort()
        for _ in range(200):
            if any("client closed the connection" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    messages = [r.getMessage() for r in caplog.records]
    assert any("client closed the connection during POST /files" in m for m in messages), messages
    assert not any("database unavailable" in m for m in messages), messages
    assert list(settings.files_dir.iterdir()) == []


# ----- remote documents -----------------------------------------------------------------------------

def mcp_with_description(description: str) -> UvicornServer:
    definitions = build_mcp(3)

    def broken(value: str) -> str:
        return value

    definitions.add_tool(broken, name="broken", description=description)
    return UvicornServer(definitions.streamable_http_app, "/mcp")


async def test_nul_in_an_mcp_tool_is_400_naming_the_server(client: TestClient, user: User,
                                                            db: asyncpg.Connection) -> None:
    async with mcp_with_description("bad\x00description") as server:
        resp = await client.post("/api/mcp/servers", json={"server_url": server.url}, headers=user.headers)
        status, body = await status_and_body(resp)
    assert status == 400, body
    assert server.url in body["detail"]
    assert await db.fetchval("SELECT count(*) FROM mcpservers") == 0
    assert await db.fetchval("SELECT count(*) FROM mcptools") == 0


async def test_nul_in_an_mcp_tool_on_refresh_marks_it_inactive(client: TestClient, user: User,
                                                                db: asyncpg.Connection) -> None:
    async with mcp_with_description("fine") as server:
        resp = await client.post("/api/mcp/servers", json={"server_url": server.url}, headers=user.headers)
        assert resp.status == 200, await resp.text()
        await server.stop()
        server.make_app = mcp_with_description("now\x00bad").make_app
        await server.start()
        report = await refresh(client)
    assert report.unreachable == [server.url] and not report.failed
    assert await db.fetchval("SELECT is_active FROM mcpservers") is False
    assert await db.fetchval("SELECT count(*) FROM mcptools WHERE description LIKE 'now%'") == 0


async def test_nul_in_an_a2a_card_is_400_and_invalid_on_refresh(client: TestClient, user: User,
                                                                 db: asyncpg.Connection) -> None:
    async with card_server() as cards:
        good = dict(cards.card)
        cards.card = {**good, "name": "bad\x00name"}
        resp = await client.post("/api/a2a/agents", json={"server_url": cards.url}, headers=user.headers)
        status, body = await status_and_body(resp)
        assert status == 400, body
        assert cards.url.rstrip("/") in body["detail"]
        assert await db.fetchval("SELECT count(*) FROM a2acards") == 0
        cards.card = good
        resp = await client.post("/api/a2a/agents", json={"server_url": cards.url}, headers=user.headers)
        assert resp.status == 200, await resp.text()
        cards.card = {**good, "skills": [{**good["skills"][0], "description": "x\x00"}]}
        report = await refresh(client)
    assert not report.failed
    assert await db.fetchval("SELECT is_active FROM a2acards") is False


async def test_a2a_card_nested_deep_is_400(client: TestClient, user: User) -> None:
    async with card_server() as cards:
        cards.card = {**cards.card, "securitySchemes": {"deep": nested(200)}}
        resp = await client.post("/api/a2a/agents", json={"server_url": cards.url}, headers=user.headers)
    assert resp.status == 400, await resp.text()


# ----- sockets --------------------------------------------------------------------------------------

async def test_session_created_by_another_user_after_the_handshake_closes_1008(
        client: TestClient, user: User, other_user: User, db: asyncpg.Connection) -> None:
    await setup_llm(client, user)
    session_id = uuid.uuid4()
    ws = await open_socket(client, user, session_id)
    await db.execute("INSERT INTO chatconversations (session_id, title, creator_id) VALUES ($1, 't', $2)",
                     session_id, uuid.UUID(other_user.id))
    await ws.send_json(chat_frame("hello"))
    frame = await receive_frame(ws)
    assert frame == {"error": "session_id belongs to another user"}
    code, reason = await receive_close(ws)
    assert (code, reason) == (1008, "session_id belongs to another user")


# ----- request line and headers ------------------------------------------------------------------

SECRET = "Bearer eyJsecretTOKENvalue"


async def raw_request(client: TestClient, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(headers["Content-Length"]))
        return int(lines[0].split()[1]), headers, body
    finally:
        writer.close()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + SECRET.encode() + b"A" * 9000 + b"\r\n\r\n", 431),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-" + b"n" * 9000 + b": " + SECRET.encode() + b"\r\n\r\n", 431),
    (b"GET /" + SECRET.replace(" ", "").encode() + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, SECRET.encode()) for i in range(200))
     + b"\r\n", 431),
])
async def test_header_or_url_over_the_limit_is_json_and_echoes_nothing(
        client: TestClient, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int) -> None:
    caplog.set_level(logging.INFO)
    got, headers, body = await raw_request(client, request_bytes)
    assert got == status, body
    assert headers["Content-Type"].startswith("application/json")
    assert "detail" in json.loads(body)
    assert b"secret" not in body.lower() and b"aaaa" not in body.lower()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_far_over_the_limit_logs_no_traceback_and_no_content(client: TestClient,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # Past the parser's own headroom aiohttp answers by itself; its log line must still be clean.
    caplog.set_level(logging.DEBUG)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: " + SECRET.encode() + b"A" * 100_000 + b"\r\n\r\n"
    got, _, _ = await raw_request(client, request)
    assert got == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not [r for r in caplog.records if "secret" in r.getMessage().lower()]
    assert any("refused a malformed request" in r.getMessage() for r in caplog.records)


# ----- the OpenAPI document -----------------------------------------------------------------------

async def test_openapi_document_is_valid_openapi_3_0_3(client: TestClient) -> None:
    from openapi_spec_validator import OpenAPIV30SpecValidator

    resp = await client.get("/openapi.json")
    assert resp.status == 200
    document = await resp.json()
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in OpenAPIV30SpecValidator(document).iter_errors()]
    assert errors == []
    assert not [op for item in document["paths"].values() for op in item.values() if "produces" in op]


async def test_login_form_is_a_urlencoded_request_body(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    login = document["paths"]["/api/login/access-token"]["post"]
    assert "parameters" not in login
    schema = login["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert schema["required"] == ["username", "password"]
    assert list(schema["properties"]) == ["grant_type", "username", "password", "scope", "client_id", "client_secret"]


async def test_openapi_document_documents_the_limits(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert f"at most {MAX_PAGE_SIZE}" in document["info"]["description"]
    limit = next(p for p in document["paths"]["/api/agents/"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == MAX_PAGE_SIZE and str(MAX_PAGE_SIZE) in limit["description"]
    password = document["components"]["schemas"]["UserCreate"]["properties"]["password"]
    assert "special character" in password["description"]


async def test_openapi_document_is_served_from_cached_bytes(client: TestClient) -> None:
    from genai_backend.openapi import OPENAPI_GZIP, OPENAPI_JSON

    plain = await client.get("/openapi.json", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == client.app[OPENAPI_JSON]
    packed = await client.get("/openapi.json", headers={"Accept-Encoding": "br, gzip;q=0.8"}, auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    assert await packed.read() == client.app[OPENAPI_GZIP]
    assert gzip.decompress(client.app[OPENAPI_GZIP]) == client.app[OPENAPI_JSON]


# ----- router frames ------------------------------------------------------------------------------

def test_router_frame_nested_very_deep_is_refused_as_not_json() -> None:
    from genai_backend.bus.handlers import _decode

    with pytest.raises(ValueError):
        _decode("[" * 200_000)
    with pytest.raises(ValueError):
        _decode('{"request_payload": ' + "[" * 500 + "]" * 500 + "}")
