"""A2A agents (rest-api #35-#38) against real agent-card servers on 127.0.0.1, and the #8 listing."""
from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.discovery.a2a import a2a_schema
from genai_backend.discovery.mcp import tool_schema
from tests.conftest import User
from tests.fake_dns import fake_dns
from tests.tool_servers import REIMBURSEMENT_CARD, card_server, mcp_server

AGENTS = "/api/a2a/agents"
METADATA = "169.254.169.254"
ROW_KEYS = ["id", "name", "alias", "description", "server_url", "card_content", "is_active", "created_at",
            "updated_at", "creator_id", "endpoint_url", "protocol_version", "transport"]
CONTENT = {
    "defaultInputModes": ["text", "text/plain"], "defaultOutputModes": ["text", "text/plain"],
    "skills": [{"id": "process_reimbursement", "name": "Process_Reimbursement_Tool",
                "description": "Helps with reimbursement.", "examples": ["Reimburse me $20"],
                "tags": ["reimbursement"]}],
    "version": "1.0.0", "capabilities": {"streaming": True}}


def unreachable(url: str) -> dict[str, str]:
    return {"detail": f"Cannot retrieve data about a2a card on url: {url}"}


async def register(client: TestClient, user: User, url: str, status: int = 200) -> Any:
    resp = await client.post(AGENTS, json={"server_url": url}, headers=user.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def read(client: TestClient, user: User, agent_id: Any) -> dict[str, Any]:
    resp = await client.get(f"{AGENTS}/{agent_id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def count_cards(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM a2acards")
    return count


# ----- #35 register -------------------------------------------------------------------------------

async def test_register_a2a_agent_stores_card(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    async with card_server() as server:
        base = f"http://127.0.0.1:{server.port}"
        created = await register(client, user, f"{base}/some/path?q=1")
    assert list(created) == ["id", "name", "alias", "description", "server_url", "card_content", "created_at",
                             "updated_at", "endpoint_url", "protocol_version", "transport"]
    assert re.fullmatch(r"Reimbursement_Agent_[a-z]{6}", created["alias"])
    assert created["created_at"] == created["updated_at"]
    assert {k: created[k] for k in ("name", "description", "server_url", "card_content")} == {
        "name": "Reimbursement_Agent", "description": "Handles reimbursements.", "server_url": base,
        "card_content": CONTENT}
    assert list(created["card_content"]) == list(CONTENT), "the reference's key order"
    row = await read(client, user, created["id"])
    assert list(row) == ROW_KEYS
    assert row == {**created, "is_active": True, "creator_id": user.id}


async def test_register_a2a_agent_keeps_the_registered_origin(client: TestClient, user: User) -> None:
    card = copy.deepcopy(REIMBURSEMENT_CARD)
    card["url"] = "http://agent.internal.invalid:9999/a2a"  # what the agent thinks its URL is
    async with card_server(card) as server:
        created = await register(client, user, server.url)
    assert created["server_url"] == f"http://127.0.0.1:{server.port}"
    assert "url" not in created["card_content"]


async def test_register_a2a_agent_from_agent_card_json(client: TestClient, user: User) -> None:
    async with card_server(mode="agent-card.json") as server:
        created = await register(client, user, server.url)
    assert created["card_content"] == CONTENT
    assert server.requests == ["/.well-known/agent-card.json"]


async def test_register_a2a_agent_falls_back_to_agent_json(client: TestClient, user: User) -> None:
    async with card_server(mode="agent.json") as server:
        created = await register(client, user, server.url)
    assert created["card_content"] == CONTENT
    assert server.requests == ["/.well-known/agent-card.json", "/.well-known/agent.json"]


@pytest.mark.parametrize("change", [
    lambda card: card.pop("name"), lambda card: card.pop("skills"), lambda card: card.pop("capabilities"),
    lambda card: card["skills"][0].pop("id"), lambda card: card.__setitem__("defaultOutputModes", "text"),
    lambda card: card.__setitem__("version", None),
], ids=["no-name", "no-skills", "no-capabilities", "skill-without-id", "modes-not-list", "null-version"])
async def test_register_a2a_agent_invalid_card_is_400(client: TestClient, user: User, db: asyncpg.Connection,
                                                      change: Callable[[dict[str, Any]], Any]) -> None:
    card = copy.deepcopy(REIMBURSEMENT_CARD)
    change(card)
    async with card_server(card) as server:
        assert await register(client, user, server.url, 400) == unreachable(server.url)
    assert await count_cards(db) == 0


@pytest.mark.parametrize("mode", ["500", "invalid-json"])
async def test_register_a2a_agent_bad_answer_is_400(client: TestClient, user: User, db: asyncpg.Connection,
                                                    mode: Any) -> None:
    async with card_server(mode=mode) as server:
        assert await register(client, user, server.url, 400) == unreachable(server.url)
    assert await count_cards(db) == 0


async def test_register_a2a_agent_unreachable_names_normalised_url(client: TestClient, user: User) -> None:
    async with card_server() as server:
        await server.stop()
        given = f"http://127.0.0.1:{server.port}"
        assert await register(client, user, given, 400) == unreachable(given + "/")


async def test_register_a2a_agent_bad_url_is_422(client: TestClient, user: User) -> None:
    resp = await client.post(AGENTS, json={"server_url": "notaurl"}, headers=user.headers)
    assert resp.status == 422
    assert await resp.json() == {"detail": [{
        "type": "url_parsing", "loc": ["body", "server_url"],
        "msg": "Input should be a valid URL, relative URL without a base", "input": "notaurl",
        "ctx": {"error": "relative URL without a base"}}]}


async def test_register_a2a_agent_metadata_address_is_refused(client: TestClient, user: User,
                                                              db: asyncpg.Connection,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    body = await register(client, user, f"http://{METADATA}/", 400)
    assert body == {"detail": f"Refused to contact http://{METADATA}/: {METADATA}: link-local, cloud-metadata and "
                              "reserved addresses are never contacted"}
    with fake_dns(monkeypatch, {"agent.example.test": METADATA}):
        body = await register(client, user, "http://agent.example.test:10102", 400)
    assert "agent.example.test resolves to 169.254.169.254: link-local" in body["detail"]
    assert await count_cards(db) == 0


async def test_register_a2a_agent_redirect_elsewhere_is_400(client: TestClient, user: User) -> None:
    async with card_server(mode="redirect", redirect_to=f"http://{METADATA}/latest/meta-data/") as server:
        assert await register(client, user, server.url, 400) == unreachable(server.url)


async def test_register_a2a_agent_twice_returns_existing(client: TestClient, user: User, other_user: User,
                                                         db: asyncpg.Connection) -> None:
    async with card_server() as server:
        first = await register(client, user, server.url)
        assert await register(client, user, server.url + "other/path") == first
        await db.execute("UPDATE a2acards SET is_active = false")
        server.card["description"] = "Changed meanwhile."
        revived = await register(client, user, server.url)
        theirs = await register(client, other_user, server.url)
    assert {**revived, "updated_at": first["updated_at"]} == first, "the existing record, re-activated"
    assert revived["updated_at"] > first["updated_at"]
    assert (await read(client, user, first["id"]))["is_active"] is True
    assert theirs["id"] != first["id"] and theirs["description"] == "Changed meanwhile."
    assert await count_cards(db) == 2


# ----- #36 list, #37 read, #38 delete -------------------------------------------------------------

async def test_list_a2a_agents_newest_first_with_inactive(client: TestClient, user: User, other_user: User,
                                                          db: asyncpg.Connection) -> None:
    async with card_server() as one, card_server() as two:
        first = await register(client, user, one.url)
        second = await register(client, user, two.url)
        await register(client, other_user, one.url)
    await db.execute("UPDATE a2acards SET is_active = false WHERE id = $1", uuid.UUID(first["id"]))
    resp = await client.get(AGENTS, headers=user.headers)
    assert resp.status == 200, await resp.text()
    listed = await resp.json()
    assert [row["id"] for row in listed] == [second["id"], first["id"]]
    assert all(list(row) == ROW_KEYS for row in listed)
    assert listed[1]["is_active"] is False


async def test_get_a2a_agent_of_other_user_is_missing(client: TestClient, user: User, other_user: User) -> None:
    async with card_server() as server:
        created = await register(client, user, server.url)
    for who, wanted in ((other_user, created["id"]), (user, str(uuid.uuid4()))):
        resp = await client.get(f"{AGENTS}/{wanted}", headers=who.headers)
        assert resp.status == 400
        assert await resp.json() == {"detail": f"A2A agent with id: '{wanted}' does not exist "}
    resp = await client.get(f"{AGENTS}/None", headers=user.headers)
    assert resp.status == 422


async def test_delete_a2a_agent(client: TestClient, user: User, other_user: User, db: asyncpg.Connection) -> None:
    async with card_server() as server:
        created = await register(client, user, server.url)
    resp = await client.delete(f"{AGENTS}/{created['id']}", headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"A2A agent with ID {created['id']} was not found"}
    assert await count_cards(db) == 1
    resp = await client.delete(f"{AGENTS}/{created['id']}", headers=user.headers)
    assert resp.status == 204, await resp.text()
    assert await count_cards(db) == 0
    resp = await client.delete(f"{AGENTS}/{created['id']}", headers=user.headers)
    assert await resp.json() == {"detail": f"A2A agent with ID {created['id']} was not found"}


# ----- #8: what the master agent sees ----------------------------------------------------------------

async def active(client: TestClient, user: User, agent_type: str) -> list[dict[str, Any]]:
    resp = await client.get("/api/agents/active", params={"agent_type": agent_type}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["count_active_connections"] == len(body["active_connections"])
    items: list[dict[str, Any]] = body["active_connections"]
    return items


async def test_active_listing_shows_registered_tools_and_cards(client: TestClient, user: User,
                                                               db: asyncpg.Connection) -> None:
    async with card_server() as cards, mcp_server(3) as tools:
        card = await register(client, user, cards.url)
        resp = await client.post("/api/mcp/servers", json={"server_url": tools.url}, headers=user.headers)
        assert resp.status == 200, await resp.text()
    server_id = await db.fetchval("SELECT id FROM mcpservers")
    resp = await client.get(f"/api/mcp/servers/{server_id}", headers=user.headers)
    server = await resp.json()
    stamps = {"created_at": server["created_at"], "updated_at": server["updated_at"]}
    card_stamps = {"created_at": card["created_at"], "updated_at": card["updated_at"]}
    card_url = card["server_url"] + "/"  # listed as pydantic prints it
    skills = card["card_content"]["skills"]
    # Newest first: the MCP tools (server order, ids ascending), then the card.
    assert await active(client, user, "all") == [
        *({"id": t["id"], "name": t["alias"], "type": "mcp", "url": tools.url, "is_active": True,
           "agent_schema": tool_schema(t["description"], t["inputSchema"], t["alias"]), **stamps}
          for t in server["mcp_tools"]),
        {"id": card["id"], "name": card["alias"], "type": "a2a", "url": card_url, "is_active": True,
         "agent_schema": a2a_schema(card["alias"], card["description"], skills), **card_stamps}]
    assert await active(client, user, "mcp") == [
        {"id": t["id"], "name": t["name"], "type": "mcp", "url": tools.url,
         "agent_schema": tool_schema(t["description"], t["inputSchema"], t["alias"]), **stamps}
        for t in server["mcp_tools"]]
    assert await active(client, user, "a2a") == [
        {"id": card["id"], "name": card["name"], "type": "a2a", "url": card_url, "is_active": True,
         "agent_schema": a2a_schema(card["name"], card["description"], skills), **card_stamps}]
    await db.execute("UPDATE mcpservers SET is_active = false")
    await db.execute("UPDATE a2acards SET is_active = false")
    assert await active(client, user, "all") == []
