"""GET /api/agents/active (rest-api #8): dual auth, every kind, flows first, paging, exact shapes."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from genai_backend.config import SETTINGS
from tests.bus_fixtures import ECHO_SCHEMA, active_agent, insert_a2a_card, insert_mcp_server, register_agent
from tests.conftest import User

TASK_TEXT = {"task": {"type": "string", "description": "A meaningful, well-formulated task for the agent"},
             "text": {"type": "string"}}
TOOL = {"name": "test_tool", "description": "Returns name", "alias": "test_tool_vopfhv",
        "inputSchema": {"name": "ignored", "properties": {"name": {"title": "Name", "type": "string"}},
                        "required": ["name"], "type": "object"}}


def iso(value: dt.datetime) -> str:
    return value.isoformat()


async def active(client: TestClient, user: User, agent_type: str = "all", **params: str) -> dict[str, Any]:
    resp = await client.get("/api/agents/active", params={"agent_type": agent_type, **params}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["count_active_connections"] == len(body["active_connections"])
    return body


async def register_flow(client: TestClient, user: User, elements: list[tuple[str, str]], name: str = "my flow",
                        description: str = "flow desc") -> dict[str, Any]:
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={
        "name": name, "description": description, "flow": [{"id": i, "type": t} for i, t in elements]})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_active_agents_dual_auth_table(client: TestClient, user: User) -> None:
    key = client.app[SETTINGS].master_be_api_key
    url = "/api/agents/active"
    cases = [
        ({}, {}, 400, "You must provide either 'user_id' or your jwt token to continue."),
        ({"user_id": user.id}, {**user.headers, "X-API-KEY": key}, 400,
         "You must provide either 'user_id' or your jwt token, but not both at the same time."),
        ({"user_id": user.id}, user.headers, 400, "Lookup by user_id is not allowed for plain authenticated users."),
        ({"user_id": user.id}, {}, 401, "You must provide x-api-key header if user_id query parameter is provided."),
        ({"user_id": user.id}, {"X-API-KEY": key + "x"}, 401,
         "You must provide x-api-key header if user_id query parameter is provided."),
        ({}, {"Authorization": "Bearer nope"}, 400, "JWT token is invalid or expired"),
    ]
    for params, headers, status, detail in cases:
        resp = await client.get(url, params={"agent_type": "all", **params}, headers=headers)
        assert resp.status == status, (params, headers)
        assert await resp.json() == {"detail": detail}
    resp = await client.get(url, params={"agent_type": "all", "user_id": user.id}, headers={"X-API-KEY": key})
    assert resp.status == 200
    resp = await client.get(url, params={"agent_type": "all"}, headers={"Authorization": user.token})
    assert resp.status == 200  # the last word of the header is the token


async def test_active_agents_query_validation(client: TestClient, user: User) -> None:
    resp = await client.get("/api/agents/active", headers=user.headers)
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "missing", "loc": ["query", "agent_type"], "msg": "Field required", "input": None}]}
    resp = await client.get("/api/agents/active", params={"agent_type": "flow", "offset": "0.1"}, headers=user.headers)
    assert await resp.json() == {"detail": [
        {"type": "enum", "loc": ["query", "agent_type"], "msg": "Input should be 'genai', 'mcp', 'a2a' or 'all'",
         "input": "flow", "ctx": {"expected": "'genai', 'mcp', 'a2a' or 'all'"}},
        {"type": "int_parsing", "loc": ["query", "offset"],
         "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "0.1"}]}


async def test_active_agents_genai_lists_flows_then_own_active_agents(client: TestClient, user: User,
                                                                      other_user: User, db) -> None:
    a = await active_agent(client, db, user, "Agent A", "desc a", ECHO_SCHEMA)
    b = await active_agent(client, db, user, "b", "desc b", {"no_function": True})
    await register_agent(client, user, "inactive", "d")
    await active_agent(client, db, other_user, "foreign", "d")
    flow = await register_flow(client, user, [(a["id"], "genai"), (b["id"], "genai")])
    body = await active(client, user, "genai")
    rows = {r["id"]: r for r in await db.fetch("SELECT id, created_at, updated_at FROM agents")}
    item_a = {"id": a["id"], "name": a["alias"], "type": "genai",
              "agent_schema": {**ECHO_SCHEMA, "function": {**ECHO_SCHEMA["function"], "name": a["alias"]}},
              "created_at": iso(rows[uuid.UUID(a["id"])]["created_at"]),
              "updated_at": iso(rows[uuid.UUID(a["id"])]["updated_at"]), "is_active": True}
    assert body["active_connections"] == [
        {"id": flow["id"], "name": flow["alias"], "type": "flow",
         "agent_schema": {**ECHO_SCHEMA, "function": {**ECHO_SCHEMA["function"], "name": flow["alias"],
                                                      "description": "flow desc"}},
         "flow": [a["id"], b["id"]], "created_at": flow["created_at"], "updated_at": flow["updated_at"],
         "is_active": True},
        {"id": b["id"], "name": b["alias"], "type": "genai", "agent_schema": {"no_function": True},
         "created_at": iso(rows[uuid.UUID(b["id"])]["created_at"]),
         "updated_at": iso(rows[uuid.UUID(b["id"])]["updated_at"]), "is_active": True},
        item_a]
    # Paging applies to agents, never to flows.
    body = await active(client, user, "genai", offset="1", limit="1")
    assert [i["id"] for i in body["active_connections"]] == [flow["id"], a["id"]]
    assert (await active(client, user, "mcp"))["active_connections"] == []


async def test_active_agents_all_merges_kinds_newest_first(client: TestClient, user: User, db) -> None:
    card = await insert_a2a_card(db, user, url="http://127.0.0.1:10102", skills=[
        {"description": "Skill one"}, {"description": "Skill two"}])
    server = await insert_mcp_server(db, user, tools=[TOOL])
    agent = await active_agent(client, db, user, "genai one", "d", ECHO_SCHEMA)
    items = (await active(client, user))["active_connections"]
    assert [i["type"] for i in items] == ["genai", "mcp", "a2a"]
    assert items[1] == {
        "id": str(server["tools"][0]["id"]), "name": "test_tool_vopfhv", "type": "mcp", "url": "http://127.0.0.1:8988/mcp",
        "agent_schema": {"description": "Returns name", "properties": {"name": {"title": "Name", "type": "string"}},
                         "required": ["name"], "title": "test_tool_vopfhv", "type": "object"},
        "created_at": iso(server["created_at"]), "updated_at": iso(server["updated_at"]), "is_active": True}
    assert items[2] == {
        "id": str(card["id"]), "name": "card_agent_qwerty", "type": "a2a", "url": "http://127.0.0.1:10102/",
        "agent_schema": {"title": "card_agent_qwerty", "description": "Card desc\nSKILLS:\nSkill one\nSkill two",
                         "properties": TASK_TEXT, "required": ["task", "text"], "type": "object"},
        "created_at": iso(card["created_at"]), "updated_at": iso(card["updated_at"]), "is_active": True}
    assert items[0]["id"] == agent["id"]
    one = (await active(client, user, offset="1", limit="1"))["active_connections"]
    assert [i["type"] for i in one] == ["mcp"]
    assert (await active(client, user, offset="3", limit="1")) == {"count_active_connections": 0,
                                                                   "active_connections": []}


async def test_active_agents_mcp_pages_servers_with_raw_tool_names(client: TestClient, user: User, db) -> None:
    old = await insert_mcp_server(db, user, "http://old.example/mcp", [
        {"name": "t1", "inputSchema": {"type": "object"}}, {"name": "t2", "description": None, "inputSchema": {}}])
    await insert_mcp_server(db, user, "http://new.example/mcp", [{"name": "t3", "inputSchema": {}}])
    await insert_mcp_server(db, user, "http://down.example/mcp", [{"name": "t4"}], active=False)
    items = (await active(client, user, "mcp", offset="1", limit="1"))["active_connections"]
    assert sorted(i["name"] for i in items) == ["t1", "t2"]
    for item in items:
        assert "is_active" not in item and item["url"] == "http://old.example/mcp"
        assert item["created_at"] == iso(old["created_at"])
        assert item["agent_schema"]["required"] == [] and "description" not in item["agent_schema"]
    assert len((await active(client, user, "mcp"))["active_connections"]) == 3


async def test_active_agents_a2a_uses_card_name(client: TestClient, user: User, db) -> None:
    await insert_a2a_card(db, user, url="HTTP://Example.COM:80", name=" Spaced ", alias="spaced_abcdef",
                          description=None, skills=[])
    await insert_a2a_card(db, user, url="http://other.example", active=False)
    [item] = (await active(client, user, "a2a"))["active_connections"]
    assert item["name"] == " Spaced " and item["url"] == "http://example.com/"
    assert item["agent_schema"]["title"] == "Spaced"
    assert item["agent_schema"]["description"] == "\nSKILLS:\n"  # discovery.a2a.a2a_schema: no description


async def test_active_agents_flow_schema_follows_first_element(client: TestClient, user: User, db) -> None:
    agent = await active_agent(client, db, user, "a", "d", ECHO_SCHEMA)
    server = await insert_mcp_server(db, user, tools=[TOOL])
    card = await insert_a2a_card(db, user)
    tool_id = str(server["tools"][0]["id"])
    by_mcp = await register_flow(client, user, [(tool_id, "mcp"), (agent["id"], "genai")], "by mcp", "mcp flow")
    by_a2a = await register_flow(client, user, [(str(card["id"]), "a2a"), (agent["id"], "genai")], "by a2a", "a2a flow")
    twice = await register_flow(client, user, [(agent["id"], "genai"), (agent["id"], "genai")], "twice", "same agent")
    items = (await active(client, user))["active_connections"]
    flows = {i["id"]: i for i in items if i["type"] == "flow"}
    assert [i["type"] for i in items][:3] == ["flow"] * 3 and list(flows) == [twice["id"], by_a2a["id"], by_mcp["id"]]
    assert flows[by_mcp["id"]]["agent_schema"] == {
        "description": "mcp flow", "properties": {"name": {"title": "Name", "type": "string"}}, "required": ["name"],
        "title": by_mcp["alias"], "type": "object"}
    assert flows[by_a2a["id"]]["agent_schema"] == {
        "title": by_a2a["alias"], "description": "a2a flow", "properties": TASK_TEXT, "required": ["task", "text"],
        "type": "object"}
    assert flows[twice["id"]]["flow"] == [agent["id"], agent["id"]]
    # A member going offline hides every flow that uses it.
    await db.execute("UPDATE mcpservers SET is_active = false")
    items = (await active(client, user))["active_connections"]
    assert by_mcp["id"] not in {i["id"] for i in items}


async def test_active_agents_timestamps_match_isoformat(client: TestClient, user: User, db) -> None:
    agent = await active_agent(client, db, user)
    for stamp in ("2026-01-02 03:04:05", "2026-01-02 03:04:05.123450", "2026-01-02 03:04:05.000001"):
        await db.execute("UPDATE agents SET created_at = $1::text::timestamp, updated_at = $1::text::timestamp", stamp)
        [item] = (await active(client, user, "genai"))["active_connections"]
        expected = dt.datetime.fromisoformat(stamp).isoformat()
        assert item["created_at"] == item["updated_at"] == expected
        resp = await client.get(f"/api/agents/{agent['id']}", headers=user.headers)
        assert (await resp.json())["created_at"] == expected
