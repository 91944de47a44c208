"""Ownership and authentication matrix over every route of the application's router.

Every route must have a row here (the test enumerates the router, so a new endpoint without a
row fails). For each protected route: every bad credential gets the spec's status and body; and
user B acting on user A's resources gets the spec's "not found" (or an empty listing), with no
byte of A's data in the answer.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from genai_backend.config import SETTINGS
from tests.conftest import User

NONE, USER, USER_OR_AGENT, DUAL = "none", "user", "user_or_agent", "dual"
NOT_AUTH = {"detail": "Not authenticated"}
INVALID = {"detail": "Token is not valid or expired. Please log in again"}
DUAL_INVALID = {"detail": "JWT token is invalid or expired"}
DUAL_KEY = {"detail": "You must provide x-api-key header if user_id query parameter is provided."}
DUAL_NOTHING = {"detail": "You must provide either 'user_id' or your jwt token to continue."}


@dataclass
class World:
    """User A's resources, and user B who must not reach them."""

    a: User
    b: User
    ids: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


Build = Callable[[World], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    auth: str
    # B's request on A's resource: (url, request kwargs) and the expected (status, body or None).
    cross: Build | None = None
    expect: tuple[int, Any] | Callable[[World], tuple[int, Any]] | None = None


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _u(url: str, **kwargs: Any) -> Build:
    return lambda w: (url.format(**w.ids), _fill(kwargs, w.ids))


def _detail(status: int, text: str) -> Callable[[World], tuple[int, Any]]:
    return lambda w: (status, {"detail": text.format(**w.ids)})


FLOW_BODY = {"name": "b flow", "description": "d"}
CFG = {"name": "cfg_b", "model": "m", "system_prompt": "s", "temperature": 0.5, "max_last_messages": 3,
       "user_prompt": "", "credentials": {}}

ROUTES: dict[tuple[str, str], Row] = {
    ("GET", "/"): Row(NONE),
    ("GET", "/health"): Row(NONE),
    ("GET", "/ready"): Row(NONE),
    ("GET", "/metrics"): Row(NONE),
    ("GET", "/docs"): Row(NONE),
    ("GET", "/openapi.json"): Row(NONE),
    ("POST", "/api/login/access-token"): Row(NONE),
    ("POST", "/api/validate-token"): Row(NONE),
    ("POST", "/api/register"): Row(NONE),
    ("GET", "/api/profiles/{user_id}"): Row(USER, _u("/api/profiles/{user_a}"),
                                           _detail(400, "Profile of user '{user_a}' does not exist")),
    ("PATCH", "/api/profiles/{user_id}"): Row(USER, _u("/api/profiles/{user_a}", json={"first_name": "x"}),
                                             _detail(400, "Profile with of user with id '{user_a}' was not found")),
    ("POST", "/api/agents/register"): Row(USER, _u("/api/agents/register", json={
        "name": "b agent", "description": "d", "input_parameters": {}}), None),
    # B has agents and providers of its own: listings are checked for A's data only.
    ("GET", "/api/agents/"): Row(USER_OR_AGENT, _u("/api/agents/")),
    ("GET", "/api/agents/active"): Row(DUAL, _u("/api/agents/active?agent_type=all")),
    ("GET", "/api/agents/frontend"): Row(USER_OR_AGENT, _u("/api/agents/frontend")),
    ("GET", "/api/agents/{agent_id}"): Row(USER_OR_AGENT, _u("/api/agents/{agent}"),
                                          _detail(400, "Agent '{agent}' does not exist")),
    ("PATCH", "/api/agents/{agent_id}"): Row(USER, _u("/api/agents/{agent}", json={
        "name": "x", "description": "y", "input_parameters": {}}), _detail(400, "Agent '{agent}' does not exist")),
    ("DELETE", "/api/agents/{agent_id}"): Row(USER, _u("/api/agents/{agent}"),
                                             _detail(400, "Agent {agent} was not found")),
    ("POST", "/api/agentflows/register"): Row(USER, lambda w: ("/api/agentflows/register", {"json": {
        **FLOW_BODY, "flow": [{"id": w.ids["agent"], "type": "genai"}, {"id": w.ids["agent2"], "type": "genai"}]}}),
        None),
    ("GET", "/api/agentflows/"): Row(USER, _u("/api/agentflows/"), (200, [])),
    ("GET", "/api/agentflows/{agentflow_id}"): Row(USER, _u("/api/agentflows/{flow}"),
                                                  _detail(400, "Flow with id '{flow}' does not exist")),
    ("PATCH", "/api/agentflows/{agentflow_id}"): Row(USER, lambda w: (f"/api/agentflows/{w.ids['flow']}", {"json": {
        **FLOW_BODY, "flow": [{"id": w.ids["agent_b"], "type": "genai"}, {"id": w.ids["agent_b2"], "type": "genai"}]}}),
        _detail(400, "Agentflow with ID '{flow}' was not found")),
    ("DELETE", "/api/agentflows/{agentflow_id}"): Row(USER, _u("/api/agentflows/{flow}"),
                                                     _detail(400, "agentflow {flow} was not found")),
    ("GET", "/api/logs/list"): Row(USER, _u("/api/logs/list?session_id={session}"), (200, [])),
    ("GET", "/api/llm/model/prompt"): Row(USER),
    ("POST", "/api/llm/model/provider"): Row(USER, _u("/api/llm/model/provider", json={
        "name": "openai", "api_key": "sk-b", "metadata": {}}), None),
    ("PATCH", "/api/llm/model/providers/{provider_name}"): Row(
        USER, _u("/api/llm/model/providers/azure", json={"api_key": "sk-b", "metadata": {}}),
        (400, {"detail": "Provider named 'azure' does not exist"})),
    ("POST", "/api/llm/model/config"): Row(USER, _u("/api/llm/model/config", json={**CFG, "provider": "azure"}),
                                           (400, {"detail": "Provider named azure does not exist"})),
    ("GET", "/api/llm/model/configs"): Row(USER, _u("/api/llm/model/configs")),
    ("GET", "/api/llm/model/config/{model_config_id}"): Row(
        USER, _u("/api/llm/model/config/{config}"), _detail(400, "Config with id '{config}' was not found")),
    ("PATCH", "/api/llm/model/config/{model_config_id}"): Row(
        USER, _u("/api/llm/model/config/{config}", json={"name": "z"}),
        _detail(400, "Config with id '{config}' was not found")),
    ("DELETE", "/api/llm/model/config/{model_config_id}"): Row(
        USER, _u("/api/llm/model/config/{config}"), _detail(400, "Config with id '{config}' was not found")),
    ("GET", "/api/chats"): Row(USER, _u("/api/chats"), (200, {"chats": []})),
    ("POST", "/api/chats"): Row(USER, _u("/api/chats", json={"title": "mine", "session_id": "{session}"}),
                                _detail(400, "Chat with Session_id - '{session}' already exists")),
    ("GET", "/api/chat"): Row(DUAL, _u("/api/chat?session_id={session}"),
                              (200, {"total_count": 0, "next_page": None, "previous_page": None, "items": []})),
    ("PATCH", "/api/chat"): Row(USER, _u("/api/chat?session_id={session}", json={"title": "x"}),
                                _detail(400, "Chat with session_id {session} does not exist")),
    ("DELETE", "/api/chat"): Row(USER, _u("/api/chat?session_id={session}"),
                                 _detail(400, "Chat with session_id: '{session}' does not exist")),
    ("POST", "/api/mcp/servers"): Row(USER),
    ("GET", "/api/mcp/servers"): Row(USER, _u("/api/mcp/servers"), (200, [])),
    ("GET", "/api/mcp/servers/{server_id}"): Row(USER, _u("/api/mcp/servers/{mcp}"),
                                                _detail(400, "MCP server with id: {mcp} was not found")),
    ("PATCH", "/api/mcp/servers/{server_id}"): Row(USER, _u("/api/mcp/servers/{mcp}", json={"headers": None}),
                                                  _detail(400, "MCP server with id: {mcp} was not found")),
    ("DELETE", "/api/mcp/servers/{server_id}"): Row(USER, _u("/api/mcp/servers/{mcp}"),
                                                   _detail(400, "MCP server with ID {mcp} was not found")),
    ("POST", "/api/a2a/agents"): Row(USER),
    ("GET", "/api/a2a/agents"): Row(USER, _u("/api/a2a/agents"), (200, [])),
    ("GET", "/api/a2a/agents/{agent_id}"): Row(USER, _u("/api/a2a/agents/{card}"),
                                              _detail(400, "A2A agent with id: '{card}' does not exist ")),
    ("DELETE", "/api/a2a/agents/{agent_id}"): Row(USER, _u("/api/a2a/agents/{card}"),
                                                 _detail(400, "A2A agent with ID {card} was not found")),
    ("POST", "/files"): Row(USER_OR_AGENT),
    ("GET", "/files/{file_id}"): Row(USER_OR_AGENT, _u("/files/{file}"),
                                    _detail(400, "File with id {file} does not exist")),
    ("GET", "/files/{file_id}/metadata"): Row(USER_OR_AGENT, _u("/files/{file}/metadata"),
                                             _detail(400, "File with id {file} does not exist")),
    ("GET", "/files"): Row(DUAL, _u("/files?session_id={session}"), (200, [])),
    ("GET", "/user/files/metadata"): Row(USER_OR_AGENT, _u("/user/files/metadata"), (200, [])),
    ("GET", "/frontend/ws"): Row(NONE),  # checked separately below: the token is a query parameter
    ("POST", "/api/keys"): Row(USER),
    ("GET", "/api/keys"): Row(USER, _u("/api/keys"), (200, [])),
    ("DELETE", "/api/keys/{key_id}"): Row(USER, _u("/api/keys/{apikey}"), _detail(404, "API key {apikey} was not found")),
    # Authenticated, but refusals are in OpenAI's error shape: tests/test_openai.py covers them.
    ("GET", "/v1/models"): Row(NONE),
    ("POST", "/v1/chat/completions"): Row(NONE),
    # B sending into A's conversation with A's config names: B has no such provider.
    ("POST", "/api/chats/{session_id}/messages"): Row(USER, _u("/api/chats/{session}/messages", json={
        "message": "x", "provider": "azure", "llm_name": "a-private-config"}),
        (400, {"detail": "Provider azure does not exist"})),
    ("GET", "/api/chats/{session_id}/runs/{request_id}"): Row(
        USER, _u("/api/chats/{session}/runs/{session}"), _detail(404, "Run {session} was not found")),
    ("GET", "/api/chats/{session_id}/runs/{request_id}/events"): Row(
        USER, _u("/api/chats/{session}/runs/{session}/events"), _detail(404, "Run {session} was not found")),
    ("POST", "/api/chats/{session_id}/runs/{request_id}/cancel"): Row(
        USER, _u("/api/chats/{session}/runs/{session}/cancel"), _detail(404, "Run {session} was not found")),
}

# The API-key scopes each protected route accepts (any one of them): the decision for every route,
# checked against what its handler declares. `()`: no key at all, a user JWT only.
CHAT_OR_READ, NO_KEY = ("chat", "read"), ()
KEY_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/api/profiles/{user_id}"): ("read",),
    ("PATCH", "/api/profiles/{user_id}"): ("manage",),
    ("POST", "/api/agents/register"): ("manage",),
    ("GET", "/api/agents/"): ("read",),
    ("GET", "/api/agents/active"): ("read",),
    ("GET", "/api/agents/frontend"): ("read",),
    ("GET", "/api/agents/{agent_id}"): ("read",),
    ("PATCH", "/api/agents/{agent_id}"): ("manage",),
    ("DELETE", "/api/agents/{agent_id}"): ("manage",),
    ("POST", "/api/agentflows/register"): ("manage",),
    ("GET", "/api/agentflows/"): ("read",),
    ("GET", "/api/agentflows/{agentflow_id}"): ("read",),
    ("PATCH", "/api/agentflows/{agentflow_id}"): ("manage",),
    ("DELETE", "/api/agentflows/{agentflow_id}"): ("manage",),
    ("GET", "/api/logs/list"): CHAT_OR_READ,
    ("GET", "/api/llm/model/prompt"): ("read",),
    ("POST", "/api/llm/model/provider"): ("manage",),
    ("PATCH", "/api/llm/model/providers/{provider_name}"): ("manage",),
    ("POST", "/api/llm/model/config"): ("manage",),
    ("GET", "/api/llm/model/configs"): ("read",),
    ("GET", "/api/llm/model/config/{model_config_id}"): ("read",),
    ("PATCH", "/api/llm/model/config/{model_config_id}"): ("manage",),
    ("DELETE", "/api/llm/model/config/{model_config_id}"): ("manage",),
    ("GET", "/api/chats"): CHAT_OR_READ,
    ("POST", "/api/chats"): ("chat",),
    ("GET", "/api/chat"): CHAT_OR_READ,
    ("PATCH", "/api/chat"): ("chat",),
    ("DELETE", "/api/chat"): ("chat",),
    ("POST", "/api/mcp/servers"): ("manage",),
    ("GET", "/api/mcp/servers"): ("read",),
    ("GET", "/api/mcp/servers/{server_id}"): ("read",),
    ("PATCH", "/api/mcp/servers/{server_id}"): ("manage",),
    ("DELETE", "/api/mcp/servers/{server_id}"): ("manage",),
    ("POST", "/api/a2a/agents"): ("manage",),
    ("GET", "/api/a2a/agents"): ("read",),
    ("GET", "/api/a2a/agents/{agent_id}"): ("read",),
    ("DELETE", "/api/a2a/agents/{agent_id}"): ("manage",),
    ("POST", "/files"): ("chat",),
    ("GET", "/files/{file_id}"): CHAT_OR_READ,
    ("GET", "/files/{file_id}/metadata"): CHAT_OR_READ,
    ("GET", "/files"): CHAT_OR_READ,
    ("GET", "/user/files/metadata"): CHAT_OR_READ,
    ("GET", "/frontend/ws"): ("chat",),  # the handshake checks it: tests/test_keys.py
    ("POST", "/api/keys"): NO_KEY,
    ("GET", "/api/keys"): NO_KEY,
    ("DELETE", "/api/keys/{key_id}"): NO_KEY,
    ("POST", "/api/chats/{session_id}/messages"): ("chat",),
    ("GET", "/api/chats/{session_id}/runs/{request_id}"): CHAT_OR_READ,
    ("GET", "/api/chats/{session_id}/runs/{request_id}/events"): CHAT_OR_READ,
    ("POST", "/api/chats/{session_id}/runs/{request_id}/cancel"): ("chat",),
}
ALL_SCOPES = ("chat", "read", "manage")
KEYS_REFUSED = {"detail": "API keys cannot be used here: this endpoint needs a user token"}


def _key(method: str, path: str) -> tuple[str, str]:
    # `/x` and `/x/` are one route served twice; compare without the slash.
    return method, path.rstrip("/") or "/"


def _app_routes(client: TestClient) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or "directory" in info or "prefix" in info:
            continue
        methods = [route.method]
        if route.method == "*":
            methods = [m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(route.handler, m)]
        found.update(_key(m, path) for m in methods if m != "HEAD")
    return found


async def _world(client: TestClient, a: User, b: User, db: Any) -> World:
    w = World(a=a, b=b, ids={"user_a": a.id})
    ids = w.ids

    async def post(user: User, url: str, **kwargs: Any) -> Any:
        resp = await client.post(url, headers=user.headers, **kwargs)
        assert resp.status in (200, 201), f"{url}: {await resp.text()}"
        return await resp.json()

    ids["agent"] = (await post(a, "/api/agents/register", json={
        "name": "a secret agent", "description": "a-private-description", "input_parameters": {}}))["id"]
    ids["agent2"] = (await post(a, "/api/agents/register", json={
        "name": "a second agent", "description": "a-private-description", "input_parameters": {}}))["id"]
    ids["agent_b"] = (await post(b, "/api/agents/register", json={
        "name": "b agent one", "description": "b", "input_parameters": {}}))["id"]
    ids["agent_b2"] = (await post(b, "/api/agents/register", json={
        "name": "b agent two", "description": "b", "input_parameters": {}}))["id"]
    await db.execute("UPDATE agents SET is_active = true")
    ids["flow"] = (await post(a, "/api/agentflows/register", json={
        "name": "a flow", "description": "a-private-flow", "flow": [
            {"id": ids["agent"], "type": "genai"}, {"id": ids["agent2"], "type": "genai"}]}))["id"]
    ids["session"] = str(uuid.uuid4())
    await post(a, "/api/chats", json={"title": "a-private-chat", "session_id": ids["session"]})
    await db.execute("INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id) "
                     "VALUES ($1, $2, 'user', 'a-private-message', $3)", uuid.uuid4(), uuid.uuid4(),
                     uuid.UUID(ids["session"]))
    await db.execute("INSERT INTO logs (session_id, request_id, agent_id, creator_id, message, log_level) "
                     "VALUES ($1, $2, $3, $4, 'a-private-log', 'info')", uuid.UUID(ids["session"]), uuid.uuid4(),
                     ids["agent"], uuid.UUID(a.id))
    provider = await post(a, "/api/llm/model/provider", json={
        "name": "azure", "api_key": "sk-a-private-key", "metadata": {"endpoint": "https://a.example"}})
    assert provider["api_key"] != "sk-a-private-key"
    configs = await post(a, "/api/llm/model/config", json={**CFG, "name": "a-private-config", "provider": "azure"})
    ids["config"] = configs[0]["configs"][0]["id"]
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", b"a-private-bytes", filename="a-private.txt", content_type="text/plain")
    form.add_field("session_id", ids["session"])
    form.add_field("request_id", str(uuid.uuid4()))
    ids["file"] = (await post(a, "/files", data=form))["id"]
    ids["mcp"] = str(uuid.uuid4())
    await db.execute("INSERT INTO mcpservers (id, server_url, creator_id, is_active) "
                     "VALUES ($1, 'http://127.0.0.1:9/a-private-mcp', $2, true)", uuid.UUID(ids["mcp"]), uuid.UUID(a.id))
    await db.execute('INSERT INTO mcptools (id, name, description, "inputSchema", alias, mcp_server_id) '
                     "VALUES ($1, 'a_private_tool', 'd', '{}', 'a_private_tool_abcdef', $2)",
                     uuid.uuid4(), uuid.UUID(ids["mcp"]))
    ids["card"] = str(uuid.uuid4())
    await db.execute("INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active, "
                     "creator_id) VALUES ($1, 'a_private_card', 'a_private_card_abcdef', 'd', "
                     "'http://127.0.0.1:9', '{\"skills\": []}', true, $2)", uuid.UUID(ids["card"]), uuid.UUID(a.id))
    key = await post(a, "/api/keys", json={"name": "a-private-key-name", "scopes": list(ALL_SCOPES)})
    ids["apikey"] = key["id"]
    w.secrets = [key["key"], key["prefix"], key["id"]]
    w.secrets += [a.id, a.username, ids["agent"], ids["agent2"], ids["flow"], ids["config"], ids["file"], ids["mcp"],
                  ids["card"], "a-private", "sk-a-private-key", provider["api_key"]]
    return w


def _bad_tokens(client: TestClient, w: World, agent_jwt: str) -> dict[str, str]:
    secret = client.app[SETTINGS].secret_key
    return {
        "malformed": "not.a.jwt",
        "expired": jwt.encode({"sub": w.b.id, "exp": int(time.time()) - 5}, secret, algorithm="HS256"),
        "other key": jwt.encode({"sub": w.b.id, "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"),
        "agent token": agent_jwt,
    }


async def test_every_route_is_in_the_matrix(client: TestClient) -> None:
    routes = _app_routes(client)
    rows = {_key(*key) for key in ROUTES}
    missing = sorted(routes - rows)
    assert not missing, f"routes without a row in the matrix: {missing}"
    stale = sorted(rows - routes)
    assert not stale, f"matrix rows for routes that do not exist: {stale}"


async def test_credentials_matrix(client: TestClient, user: User, other_user: User, db: Any) -> None:
    w = await _world(client, user, other_user, db)
    agent_jwt = (await (await client.get(f"/api/agents/{w.ids['agent_b']}", headers=w.b.headers)).json())["agent_jwt"]
    failures: list[str] = []
    for (method, route), row in ROUTES.items():
        if row.auth == NONE or row.cross is None and row.auth != USER:
            continue
        url, kwargs = row.cross(w) if row.cross else (route.replace("{", "").replace("}", ""), {})
        cases: list[tuple[str, dict[str, str], int, Any]] = []
        if row.auth == DUAL:
            cases.append(("no credentials", {}, 400, DUAL_NOTHING))
            for name, token in _bad_tokens(client, w, agent_jwt).items():
                cases.append((name, {"Authorization": f"Bearer {token}"}, 400, DUAL_INVALID))
            sep = "&" if "?" in url else "?"
            for name, key in (("wrong X-API-KEY", "wrong"), ("missing X-API-KEY", "")):
                headers = {"X-API-KEY": key} if key else {}
                cases.append((name, headers, 401, DUAL_KEY))
                url_uid = f"{url}{sep}user_id={w.a.id}"
                resp = await client.request(method, url_uid, headers=headers, **kwargs)
                if resp.status != 401 or await resp.json() != DUAL_KEY:
                    failures.append(f"{method} {route} [{name}]: {resp.status} {await resp.text()}")
                cases.pop()
        else:
            cases.append(("no credentials", {}, 401, NOT_AUTH))
            cases.append(("basic scheme", {"Authorization": "Basic abc"}, 401, NOT_AUTH))
            cases.append(("X-API-KEY on a user route", {"X-API-KEY": client.app[SETTINGS].master_be_api_key}, 401,
                          NOT_AUTH))
            for name, token in _bad_tokens(client, w, agent_jwt).items():
                if name == "agent token" and row.auth == USER_OR_AGENT:
                    continue
                cases.append((name, {"Authorization": f"Bearer {token}"}, 401, INVALID))
        for name, headers, status, body in cases:
            resp = await client.request(method, url, headers=headers, **kwargs)
            got = await resp.json() if resp.content_type == "application/json" else await resp.text()
            if resp.status != status or got != body:
                failures.append(f"{method} {route} [{name}]: {resp.status} {got}")
            elif status == 401 and row.auth != DUAL and resp.headers.get("WWW-Authenticate") != "Bearer":
                failures.append(f"{method} {route} [{name}]: no WWW-Authenticate")
    assert not failures, "\n".join(failures)


async def _key_of(client: TestClient, user: User, scopes: tuple[str, ...] = ALL_SCOPES) -> dict[str, str]:
    resp = await client.post("/api/keys", json={"name": "k", "scopes": list(scopes)}, headers=user.headers)
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['key']}"}


@pytest.mark.parametrize("credential", ["user JWT", "API key"])
async def test_ownership_matrix(client: TestClient, user: User, other_user: User, db: Any, credential: str) -> None:
    w = await _world(client, user, other_user, db)
    b_headers = w.b.headers if credential == "user JWT" else await _key_of(client, w.b)
    failures: list[str] = []
    for (method, route), row in ROUTES.items():
        if row.cross is None:
            continue
        url, kwargs = row.cross(w)
        resp = await client.request(method, url, headers=b_headers, **kwargs)
        text = await resp.text()
        # An id B itself sent may be echoed in the error text; anything else of A's is a leak.
        sent = url + repr(kwargs)
        leaked = [s for s in w.secrets if s in text and s not in sent]
        if leaked:
            failures.append(f"{method} {route}: B sees A's data {leaked}: {text[:200]}")
        if row.expect is None:
            if resp.status >= 500:
                failures.append(f"{method} {route}: {resp.status} {text[:200]}")
            continue
        status, body = row.expect(w) if callable(row.expect) else row.expect
        if credential == "API key" and KEY_SCOPES[(method, route)] == NO_KEY:
            status, body = 403, KEYS_REFUSED
        got = await resp.json() if resp.content_type == "application/json" else text
        if resp.status != status or (body is not None and got != body):
            failures.append(f"{method} {route}: expected {status} {body}, got {resp.status} {got}")
    # A's resources are all still there, unchanged by B's attempts.
    resp = await client.get(f"/api/agents/{w.ids['agent']}", headers=w.a.headers)
    assert resp.status == 200
    resp = await client.get(f"/api/agentflows/{w.ids['flow']}", headers=w.a.headers)
    assert resp.status == 200 and (await resp.json())["name"] == "a_flow"
    resp = await client.get(f"/api/chat?session_id={w.ids['session']}", headers=w.a.headers)
    assert (await resp.json())["total_count"] == 1
    resp = await client.get(f"/files/{w.ids['file']}", headers=w.a.headers)
    assert await resp.read() == b"a-private-bytes"
    resp = await client.get("/api/keys", headers=w.a.headers)
    assert [k["id"] for k in await resp.json()] == [w.ids["apikey"]]
    assert not failures, "\n".join(failures)


def _handler(client: TestClient, method: str, route: str) -> Any:
    for app_route in client.app.router.routes():
        info = app_route.resource.get_info() if app_route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and _key(method, path) == _key(method, route) and app_route.method in (method, "*"):
            handler = app_route.handler
            return getattr(handler, method.lower(), None) if app_route.method == "*" else handler
    raise AssertionError(f"no handler for {method} {route}")


async def test_every_protected_route_has_a_key_scope_decision(client: TestClient) -> None:
    from genai_backend.auth.middleware import declared_scopes

    protected = {key for key, row in ROUTES.items() if row.auth != NONE} | {("GET", "/frontend/ws")}
    assert set(KEY_SCOPES) == protected
    wrong = [f"{method} {route}: declares {declared_scopes(_handler(client, method, route))}, the table says {scopes}"
             for (method, route), scopes in KEY_SCOPES.items() if route != "/frontend/ws"
             and declared_scopes(_handler(client, method, route)) != scopes]
    assert not wrong, "\n".join(wrong)


async def test_key_scopes_matrix(client: TestClient, user: User, other_user: User, db: Any) -> None:
    """On every route: a dead key is a 401, a key without an accepted scope a 403 naming them."""
    w = await _world(client, user, other_user, db)
    expired = await _key_of(client, w.b)
    await db.execute("UPDATE api_keys SET expires_at = (now() AT TIME ZONE 'UTC') - interval '1 second' "
                     "WHERE user_id = $1", uuid.UUID(w.b.id))
    revoked = await _key_of(client, w.b)
    await db.execute("DELETE FROM api_keys WHERE user_id = $1 AND expires_at IS NULL", uuid.UUID(w.b.id))
    dead = {"unknown": {"Authorization": "Bearer gk_" + "A" * 43}, "expired": expired, "revoked": revoked,
            "bare prefix": {"Authorization": "Bearer gk_"}}
    keys = {scopes: await _key_of(client, w.b, scopes)
            for scopes in (("chat",), ("read",), ("manage",), ("chat", "read"), ("read", "manage"), ("chat", "manage"),
                           ALL_SCOPES)}
    failures: list[str] = []
    for (method, route), accepted in KEY_SCOPES.items():
        if route == "/frontend/ws":
            continue
        row = ROUTES[(method, route)]
        url, kwargs = row.cross(w) if row.cross else (route.replace("{", "").replace("}", ""), {})
        cases: list[tuple[str, dict[str, str], int, Any]] = [
            (name, headers, 401, INVALID) for name, headers in dead.items()]
        if accepted == NO_KEY:
            cases.append(("every scope", keys[ALL_SCOPES], 403, KEYS_REFUSED))
        else:
            lacking = tuple(s for s in ALL_SCOPES if s not in accepted)
            named = " or ".join(f"'{s}'" for s in accepted)
            cases.append((f"scopes {lacking}", keys[lacking], 403, {"detail": f"This API key lacks the {named} scope"}))
        for name, headers, status, body in cases:
            resp = await client.request(method, url, headers=headers, **kwargs)
            got = await resp.json() if resp.content_type == "application/json" else await resp.text()
            if resp.status != status or got != body:
                failures.append(f"{method} {route} [{name}]: {resp.status} {got}")
            elif "Bearer" not in resp.headers.get("WWW-Authenticate", ""):
                failures.append(f"{method} {route} [{name}]: no WWW-Authenticate")
    assert not failures, "\n".join(failures)


async def test_websocket_matrix(client: TestClient, user: User, other_user: User, db: Any) -> None:
    w = await _world(client, user, other_user, db)
    secret = client.app[SETTINGS].secret_key
    expired = jwt.encode({"sub": w.b.id, "exp": int(time.time()) - 5}, secret, algorithm="HS256")
    agent_jwt = (await (await client.get(f"/api/agents/{w.ids['agent_b']}", headers=w.b.headers)).json())["agent_jwt"]
    for query in ("", "token=", "token=garbage", f"token={expired}", f"token={agent_jwt}",
                  f"token={w.b.token}&session_id=not-a-uuid",
                  f"token={w.b.token}&session_id={w.ids['session']}"):
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect(f"/frontend/ws?{query}")
        assert info.value.status == 403, query
    ws = await client.ws_connect(f"/frontend/ws?token={w.b.token}&session_id={uuid.uuid4()}")
    await ws.close()
