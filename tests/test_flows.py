"""Agent flows over REST (rest-api #12-#16) and flow re-evaluation (background-jobs §4)."""
from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from genai_backend.db import POOL
from genai_backend.flows_state import reevaluate_flows
from tests.bus_fixtures import active_agent, insert_a2a_card, insert_mcp_server, register_agent, set_active
from tests.conftest import User

MEMBERS = ("One or more agents were not registered previously or are not active: {}. Make sure agent was "
           "registered by you and is active before including it into the agent flow")


def body(*ids: Any, name: str = "my flow", description: str = "flow desc", kind: str = "genai") -> dict[str, Any]:
    return {"name": name, "description": description, "flow": [{"id": i, "type": kind} for i in ids]}


async def two_agents(client: TestClient, db: Any, user: User) -> tuple[str, str]:
    a = await active_agent(client, db, user, "a")
    b = await active_agent(client, db, user, "b")
    return a["id"], b["id"]


async def test_register_flow_returns_row(client: TestClient, user: User, db) -> None:
    a, b = await two_agents(client, db, user)
    resp = await client.post("/api/agentflows/register", headers=user.headers,
                             json={**body(a.upper(), b, name="My Flow"), "extra": 1})
    assert resp.status == 200, await resp.text()
    row = await resp.json()
    assert set(row) == {"name", "description", "creator_id", "is_active", "updated_at", "alias", "id", "flow",
                        "created_at"}
    assert row["name"] == "my_flow" and row["description"] == "flow desc" and row["is_active"] is True
    assert re.fullmatch(r"my_flow_[a-z]{6}", row["alias"]) and row["creator_id"] == user.id
    assert row["flow"] == [{"id": a, "type": "genai"}, {"id": b, "type": "genai"}]
    assert row["created_at"] == row["updated_at"]
    # Duplicate names are fine.
    resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b, name="My Flow"))
    assert resp.status == 200


async def test_register_flow_with_inactive_or_foreign_member_is_400(client: TestClient, user: User,
                                                                   other_user: User, db) -> None:
    a, b = await two_agents(client, db, user)
    c = (await active_agent(client, db, user, "c"))["id"]
    await set_active(db, b, False)
    foreign = (await active_agent(client, db, other_user, "f"))["id"]
    missing = str(uuid.uuid4())
    for ids, shown in (((a, b), [b]), ((a, foreign), [foreign]), ((a, missing, missing), [missing])):
        resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(*ids))
        assert resp.status == 400
        assert await resp.json() == {"detail": MEMBERS.format(repr(shown))}
    resp = await client.post("/api/agentflows/register", headers=user.headers,
                             json={"name": "f", "description": "d",
                                   "flow": [{"id": a, "type": "genai"}, {"type": "genai"}]})
    assert await resp.json() == {"detail": MEMBERS.format("[None]")}
    resp = await client.post("/api/agentflows/register", headers=user.headers,
                             json={"name": "f", "description": "d", "flow": [{"id": a, "type": "genai"}, {"id": c}]})
    assert await resp.json() == {"detail": MEMBERS.format(repr([c]))}  # no type: never valid
    resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(a, a, kind="mcp"))
    assert resp.status == 400  # right id, wrong kind
    assert await db.fetchval("SELECT count(*) FROM agentworkflows") == 0


async def test_register_flow_of_tools_and_cards(client: TestClient, user: User, db) -> None:
    server = await insert_mcp_server(db, user, tools=[{"name": "t"}])
    card = await insert_a2a_card(db, user)
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={
        "name": "mixed", "description": "d",
        "flow": [{"id": str(server["tools"][0]["id"]), "type": "mcp"}, {"id": str(card["id"]), "type": "a2a"}]})
    assert resp.status == 200, await resp.text()


async def test_register_flow_element_errors(client: TestClient, user: User, db) -> None:
    a, _ = await two_agents(client, db, user)
    cases: list[tuple[Any, int, Any]] = [
        ([{"id": "abc", "type": "genai"}, {"id": a, "type": "genai"}], 400, "Agent ID is not a valid UUID"),
        ([{"id": a, "type": "tool"}, {"id": a, "type": "genai"}], 400,
         "Agent type must be one of 'genai', 'mcp', or 'a2a'"),
        ([{"id": a, "type": None}, {"id": a}], 400, "Agent type must be one of 'genai', 'mcp', or 'a2a'"),
        # the 400 wins over an earlier element's 422
        ([{"id": None}, {"id": "abc"}], 400, "Agent ID is not a valid UUID"),
    ]
    for flow, status, detail in cases:
        resp = await client.post("/api/agentflows/register", headers=user.headers,
                                 json={"name": "n" * 60, "description": "d", "flow": flow})
        assert resp.status == status
        assert await resp.json() == {"detail": detail}
    resp = await client.post("/api/agentflows/register", headers=user.headers,
                             json={"name": "f", "description": "d", "flow": [{"id": None}, {"id": a}]})
    assert resp.status == 422
    assert await resp.json() == {"detail": [{"type": "string_type", "loc": ["body", "flow", 0, "id"],
                                             "msg": "Input should be a valid string", "input": None}]}
    one = [{"id": a, "type": "genai"}]
    resp = await client.post("/api/agentflows/register", headers=user.headers,
                             json={"name": "f", "description": "d", "flow": one})
    assert await resp.json() == {"detail": [{"type": "value_error", "loc": ["body", "flow"],
                                             "msg": "Value error, Agentflow must contain more than 1 agent",
                                             "input": one, "ctx": {"error": {}}}]}
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={"name": "f", "description": "d",
                                                                                     "flow": "[]"})
    assert resp.status == 422
    assert await db.fetchval("SELECT count(*) FROM agentworkflows") == 0


async def test_register_flow_name_and_description_rules(client: TestClient, user: User, db) -> None:
    a, b = await two_agents(client, db, user)
    resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b, name="x" * 56))
    assert resp.status == 422
    [err] = (await resp.json())["detail"]
    assert err["msg"] == "Value error, Flow name must be less than 55 characters"
    resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b, name="", description=""))
    assert resp.status == 400
    assert await resp.json() == {"detail": "'name' parameter must not be empty string"}
    resp = await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b, description=""))
    assert await resp.json() == {"detail": "'description' parameter must not be empty string"}
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={"flow": []})
    assert [e["loc"] for e in (await resp.json())["detail"]] == [["body", "name"], ["body", "description"],
                                                                  ["body", "flow"]]


async def test_list_flows_newest_first_with_recomputed_flag(client: TestClient, user: User, other_user: User,
                                                           db) -> None:
    a, b = await two_agents(client, db, user)
    first = await (await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b))).json()
    second = await (await client.post("/api/agentflows/register", headers=user.headers,
                                      json=body(b, a, name="second"))).json()
    c, d = await two_agents(client, db, other_user)
    await client.post("/api/agentflows/register", headers=other_user.headers, json=body(c, d))
    for url in ("/api/agentflows/", "/api/agentflows"):
        resp = await client.get(url, headers=user.headers)
        assert resp.status == 200
        items = await resp.json()
        assert [i["id"] for i in items] == [second["id"], first["id"]]
    assert items[1] == {"name": "my_flow", "description": "flow desc", "flow": first["flow"],
                        "created_at": first["created_at"], "updated_at": first["updated_at"], "id": first["id"],
                        "is_active": True}
    await set_active(db, a, False)
    items = await (await client.get("/api/agentflows/", headers=user.headers)).json()
    assert [i["is_active"] for i in items] == [False, False]
    assert await db.fetchval("SELECT bool_and(is_active) FROM agentworkflows") is True  # not written back
    resp = await client.get("/api/agentflows/", params={"offset": "1", "limit": "5"}, headers=user.headers)
    items = await resp.json()
    assert [i["id"] for i in items] == [first["id"]]


async def test_get_flow_and_other_users_is_400(client: TestClient, user: User, other_user: User, db) -> None:
    a, b = await two_agents(client, db, user)
    flow = await (await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b))).json()
    resp = await client.get(f"/api/agentflows/{flow['id']}", headers=user.headers)
    assert resp.status == 200 and (await resp.json())["id"] == flow["id"]
    resp = await client.get(f"/api/agentflows/{flow['id']}", headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Flow with id '{flow['id']}' does not exist"}
    resp = await client.get("/api/agentflows/None", headers=user.headers)
    assert resp.status == 422


async def test_patch_flow_replaces_and_gets_new_alias(client: TestClient, user: User, db) -> None:
    a, b = await two_agents(client, db, user)
    flow = await (await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b))).json()
    resp = await client.patch(f"/api/agentflows/{flow['id']}", headers=user.headers,
                              json=body(b, a, name="My Flow", description="new"))
    assert resp.status == 200, await resp.text()
    row = await resp.json()
    assert row["alias"] != flow["alias"] and row["alias"].startswith("my_flow_")
    assert row["description"] == "new" and row["flow"][0]["id"] == b
    assert row["updated_at"] > row["created_at"] == flow["created_at"]


async def test_patch_flow_checks_members_before_existence(client: TestClient, user: User, other_user: User,
                                                          db) -> None:
    a, b = await two_agents(client, db, user)
    flow = await (await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b))).json()
    missing = str(uuid.uuid4())
    resp = await client.patch(f"/api/agentflows/{uuid.uuid4()}", headers=user.headers, json=body(a, missing))
    assert await resp.json() == {"detail": MEMBERS.format(repr([missing]))}
    unknown = str(uuid.uuid4())
    resp = await client.patch(f"/api/agentflows/{unknown}", headers=user.headers, json=body(a, b))
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Agentflow with ID '{unknown}' was not found"}
    c, d = await two_agents(client, db, other_user)
    resp = await client.patch(f"/api/agentflows/{flow['id']}", headers=other_user.headers, json=body(c, d))
    assert await resp.json() == {"detail": f"Agentflow with ID '{flow['id']}' was not found"}
    row = await db.fetchrow("SELECT alias, updated_at <= created_at AS untouched FROM agentworkflows WHERE id = $1",
                            uuid.UUID(flow["id"]))
    assert row["alias"] == flow["alias"] and row["untouched"] is True


async def test_delete_flow_then_400_and_collection_is_405(client: TestClient, user: User, other_user: User,
                                                          db) -> None:
    a, b = await two_agents(client, db, user)
    flow = await (await client.post("/api/agentflows/register", headers=user.headers, json=body(a, b))).json()
    resp = await client.delete(f"/api/agentflows/{flow['id']}", headers=other_user.headers)
    assert resp.status == 400
    resp = await client.delete(f"/api/agentflows/{flow['id']}", headers=user.headers)
    assert resp.status == 204
    resp = await client.delete(f"/api/agentflows/{flow['id']}", headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"agentflow {flow['id']} was not found"}
    resp = await client.delete("/api/agentflows/", headers=user.headers)
    assert resp.status == 405


async def test_reevaluate_flows_full_predicate_owner_only_write_on_change(client: TestClient, user: User,
                                                                          other_user: User, db) -> None:
    a, _ = await two_agents(client, db, user)
    server = await insert_mcp_server(db, user, tools=[{"name": "t"}])
    tool = str(server["tools"][0]["id"])
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={
        "name": "f", "description": "d", "flow": [{"id": a, "type": "genai"}, {"id": tool, "type": "mcp"}]})
    assert resp.status == 200
    c, d = await two_agents(client, db, other_user)
    await client.post("/api/agentflows/register", headers=other_user.headers, json=body(c, d))
    before = await db.fetch("SELECT id, is_active, updated_at FROM agentworkflows ORDER BY id")
    pool = client.app[POOL]
    await reevaluate_flows(pool, uuid.UUID(user.id))
    assert await db.fetch("SELECT id, is_active, updated_at FROM agentworkflows ORDER BY id") == before
    # The genai member goes offline; an MCP-side change must not flip the flow back (D20).
    await set_active(db, a, False)
    await set_active(db, c, False)
    await reevaluate_flows(pool, uuid.UUID(user.id))
    await db.execute("UPDATE mcpservers SET is_active = true")
    await reevaluate_flows(pool, uuid.UUID(user.id))
    rows = {r["creator_id"]: r["is_active"] for r in await db.fetch("SELECT creator_id, is_active FROM agentworkflows")}
    assert rows == {uuid.UUID(user.id): False, uuid.UUID(other_user.id): True}
    await set_active(db, a, True)
    await reevaluate_flows(pool, uuid.UUID(user.id))
    assert await db.fetchval("SELECT is_active FROM agentworkflows WHERE creator_id = $1", uuid.UUID(user.id)) is True
    await register_agent(client, user)  # an unrelated agent changes nothing
