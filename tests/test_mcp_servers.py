"""MCP servers (rest-api #31-#34) against real MCP servers on 127.0.0.1."""
from __future__ import annotations

import re
import time
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.discovery.mcp import tool_schema
from tests.conftest import User, make_user, with_settings
from tests.fake_dns import fake_dns
from tests.tool_servers import RedirectServer, card_server, mcp_server

SERVERS = "/api/mcp/servers"
METADATA = "169.254.169.254"
TWENTY = ["test_tool", "noargs", "annotated"] + [f"tool_{i}" for i in range(3, 20)]
SERVER_KEYS = ["id", "name", "description", "server_url", "created_at", "updated_at", "creator_id", "is_active",
               "mcp_tools"]
TOOL_KEYS = ["id", "name", "description", "inputSchema", "annotations", "alias", "mcp_server_id", "created_at",
             "updated_at"]


def unreachable(url: str) -> dict[str, str]:
    return {"detail": f"Could not access MCP server on: {url}. Make sure your MCP server supports 'streamable-http' "
                      "protocol and is remotely accesible."}


async def register(client: TestClient, user: User, url: str, status: int = 200) -> Any:
    resp = await client.post(SERVERS, json={"server_url": url}, headers=user.headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def server_id_of(db: asyncpg.Connection, url: str, creator_id: str) -> uuid.UUID:
    server_id: uuid.UUID = await db.fetchval(
        "SELECT id FROM mcpservers WHERE server_url = $1 AND creator_id = $2", url, uuid.UUID(creator_id))
    return server_id


async def read(client: TestClient, user: User, server_id: Any) -> dict[str, Any]:
    resp = await client.get(f"{SERVERS}/{server_id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def count_rows(db: asyncpg.Connection) -> tuple[int, int]:
    return (await db.fetchval("SELECT count(*) FROM mcpservers"), await db.fetchval("SELECT count(*) FROM mcptools"))


# ----- #31 register -------------------------------------------------------------------------------

async def test_register_mcp_server_stores_twenty_tools(client: TestClient, user: User,
                                                       db: asyncpg.Connection) -> None:
    async with mcp_server(20) as server:
        started = time.perf_counter()
        created = await register(client, user, server.url)
        elapsed = time.perf_counter() - started
    assert elapsed < 5, f"discovery of 20 tools took {elapsed:.2f} s"
    assert list(created) == ["server_url", "mcp_tools", "is_active", "created_at", "updated_at"]
    assert created["server_url"] == server.url and created["is_active"] is True
    stored = await read(client, user, await server_id_of(db, server.url, user.id))
    assert list(stored) == SERVER_KEYS
    assert (stored["name"], stored["description"], stored["creator_id"]) == (None, None, user.id)
    tools = stored["mcp_tools"]
    assert [tool["name"] for tool in tools] == TWENTY, "tools keep the server's order"
    for tool in tools:
        assert list(tool) == TOOL_KEYS
        assert re.fullmatch(re.escape(tool["name"]) + "_[a-z]{6}", tool["alias"])
        assert tool["mcp_server_id"] == stored["id"]
        # One transaction: every timestamp equals the server's (rest-api #31).
        assert tool["created_at"] == tool["updated_at"] == stored["created_at"] == created["created_at"]
    by_name = {tool["name"]: tool for tool in tools}
    assert by_name["test_tool"]["inputSchema"] == {
        "properties": {"name": {"title": "Name", "type": "string"}}, "required": ["name"],
        "title": "test_toolArguments", "type": "object"}
    assert by_name["test_tool"]["annotations"] is None
    assert by_name["annotated"]["annotations"] == {"title": "Annotated", "readOnlyHint": True, "openWorldHint": False}
    assert created["mcp_tools"] == [tool_schema(t["description"], t["inputSchema"], t["alias"]) for t in tools]
    assert created["mcp_tools"][1] == {"description": "No args", "properties": {}, "title": by_name["noargs"]["alias"],
                                       "type": "object", "required": []}


async def test_register_mcp_server_over_http_sse(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    async with mcp_server(5, transport="sse") as server:
        created = await register(client, user, server.url)
    assert [tool["title"].rsplit("_", 1)[0] for tool in created["mcp_tools"]] == TWENTY[:5]
    assert await count_rows(db) == (1, 5)


async def test_register_mcp_server_follows_tool_pages(client: TestClient, user: User) -> None:
    async with mcp_server(20, page_size=6) as server:
        created = await register(client, user, server.url)
    assert len(created["mcp_tools"]) == 20


async def test_register_mcp_server_stores_normalised_url(client: TestClient, user: User,
                                                         db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        created = await register(client, user, f"  HTTP://LOCALHOST:{server.port}/mcp")
    assert created["server_url"] == f"http://localhost:{server.port}/mcp"
    assert await db.fetchval("SELECT server_url FROM mcpservers") == created["server_url"]


@pytest.mark.parametrize(("value", "error"), [
    ("notaurl", {"type": "url_parsing", "loc": ["body", "server_url"],
                 "msg": "Input should be a valid URL, relative URL without a base", "input": "notaurl",
                 "ctx": {"error": "relative URL without a base"}}),
    ("ftp://h/x", {"type": "url_scheme", "loc": ["body", "server_url"], "msg": "URL scheme should be 'http' or 'https'",
                   "input": "ftp://h/x", "ctx": {"expected_schemes": "'http' or 'https'"}}),
    (8080, {"type": "url_type", "loc": ["body", "server_url"], "msg": "URL input should be a string or URL",
            "input": 8080}),
])
async def test_register_mcp_server_bad_url_is_422(client: TestClient, user: User, db: asyncpg.Connection,
                                                  value: Any, error: dict[str, Any]) -> None:
    resp = await client.post(SERVERS, json={"server_url": value}, headers=user.headers)
    assert resp.status == 422
    assert await resp.json() == {"detail": [error]}
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_missing_url_is_422(client: TestClient, user: User) -> None:
    resp = await client.post(SERVERS, json={}, headers=user.headers)
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "missing", "loc": ["body", "server_url"], "msg": "Field required", "input": {}}]}


async def test_register_mcp_server_needs_a_user(client: TestClient) -> None:
    resp = await client.post(SERVERS, json={"server_url": "notaurl"})
    assert resp.status == 401
    assert await resp.json() == {"detail": "Not authenticated"}


async def test_register_mcp_server_unreachable_is_400(client: TestClient, user: User,
                                                      db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        await server.stop()
        started = time.perf_counter()
        assert await register(client, user, server.url, 400) == unreachable(server.url)
        assert time.perf_counter() - started < 5
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_not_speaking_mcp_is_400(client: TestClient, user: User,
                                                           db: asyncpg.Connection) -> None:
    async with card_server() as server:
        assert await register(client, user, server.url, 400) == unreachable(server.url)
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_metadata_address_is_refused(client: TestClient, user: User,
                                                               db: asyncpg.Connection) -> None:
    for url in (f"http://{METADATA}/mcp", "http://[fd00:ec2::254]/mcp", "http://[::ffff:a9fe:a9fe]/mcp"):
        body = await register(client, user, url, 400)
        assert body["detail"].startswith(f"Refused to contact {url}: ")
        assert "link-local, cloud-metadata and reserved addresses are never contacted" in body["detail"]
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_name_resolving_to_metadata_is_refused(
        client: TestClient, user: User, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_dns(monkeypatch, {"tools.example.test": METADATA}):
        body = await register(client, user, "http://tools.example.test:8000/mcp", 400)
    assert body == {"detail": "Refused to contact http://tools.example.test:8000/mcp: tools.example.test resolves to "
                              "169.254.169.254: link-local, cloud-metadata and reserved addresses are never contacted"}
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_redirect_to_metadata_is_not_followed(client: TestClient, user: User,
                                                                   db: asyncpg.Connection) -> None:
    # The SDK follows no redirect at all (and the guard would refuse this one if it did).
    async with RedirectServer(f"http://{METADATA}/mcp") as server:
        assert await register(client, user, server.url, 400) == unreachable(server.url)
    assert await count_rows(db) == (0, 0)


async def test_register_mcp_server_private_address_follows_policy(aiohttp_client: Any, settings: Settings,
                                                                  password_hash: str) -> None:
    strict = await aiohttp_client(create_app(with_settings(settings, urls_allow_private=False)))
    user = await make_user(strict, password_hash)
    async with mcp_server(3) as server:
        body = await register(strict, user, server.url, 400)
        assert "a private address: private networks are not allowed" in body["detail"]
        allowed = await aiohttp_client(create_app(with_settings(
            settings, urls_allow_private=False, urls_allow_hosts=("127.0.0.0/8",))))
        assert len((await register(allowed, user, server.url))["mcp_tools"]) == 3


async def test_register_mcp_server_twice_returns_existing(client: TestClient, user: User,
                                                          db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        first = await register(client, user, server.url)
        again = await register(client, user, server.url)
        assert again == first
        server_id = await server_id_of(db, server.url, user.id)
        await db.execute("UPDATE mcpservers SET is_active = false WHERE id = $1", server_id)
        # The server now lists more tools: the existing record comes back unchanged, re-activated.
        await server.stop()
        server.make_app = mcp_server(5).make_app
        await server.start()
        revived = await register(client, user, server.url)
    assert revived["mcp_tools"] == first["mcp_tools"] and revived["is_active"] is True
    assert revived["created_at"] == first["created_at"] and revived["updated_at"] > first["updated_at"]
    assert await count_rows(db) == (1, 3)


async def test_register_same_mcp_url_for_two_users(client: TestClient, user: User, other_user: User,
                                                   db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        mine = await register(client, user, server.url)
        theirs = await register(client, other_user, server.url)
    assert [t["title"] for t in mine["mcp_tools"]] != [t["title"] for t in theirs["mcp_tools"]], "own aliases"
    assert await count_rows(db) == (2, 6)


# ----- #32 list, #33 read ---------------------------------------------------------------------------

async def test_list_mcp_servers_active_only_oldest_first(client: TestClient, user: User, other_user: User,
                                                         db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        # Three spellings of one server are three registrations.
        urls = [server.url, f"http://localhost:{server.port}/mcp", f"http://127.0.0.1:{server.port}/mcp?v=2"]
        for url in urls:
            await register(client, user, url)
        await register(client, other_user, server.url)
    await db.execute("UPDATE mcpservers SET is_active = false WHERE server_url = $1", urls[1])
    resp = await client.get(SERVERS, headers=user.headers)
    assert resp.status == 200, await resp.text()
    listed = await resp.json()
    assert [s["server_url"] for s in listed] == [urls[0], urls[2]]
    assert all(list(s) == SERVER_KEYS and len(s["mcp_tools"]) == 3 for s in listed)
    assert listed[0] == await read(client, user, listed[0]["id"])
    resp = await client.get(SERVERS, params={"limit": "1", "offset": "1"}, headers=user.headers)
    assert [s["server_url"] for s in await resp.json()] == [urls[2]]


async def test_list_mcp_servers_bad_paging_is_422(client: TestClient, user: User) -> None:
    resp = await client.get(SERVERS, params={"limit": "x", "offset": "0.1"}, headers=user.headers)
    assert resp.status == 422
    assert [e["loc"] for e in (await resp.json())["detail"]] == [["query", "limit"], ["query", "offset"]]


async def test_get_mcp_server_inactive_is_still_readable(client: TestClient, user: User,
                                                         db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        await register(client, user, server.url)
    await db.execute("UPDATE mcpservers SET is_active = false")
    server_id = await server_id_of(db, server.url, user.id)
    assert (await read(client, user, server_id))["is_active"] is False


async def test_get_mcp_server_of_other_user_is_missing(client: TestClient, user: User, other_user: User,
                                                       db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        await register(client, user, server.url)
    server_id = await server_id_of(db, server.url, user.id)
    for who, wanted in ((other_user, server_id), (user, uuid.uuid4())):
        resp = await client.get(f"{SERVERS}/{wanted}", headers=who.headers)
        assert resp.status == 400
        assert await resp.json() == {"detail": f"MCP server with id: {wanted} was not found"}


async def test_get_mcp_server_bad_id_is_422(client: TestClient, user: User) -> None:
    resp = await client.get(f"{SERVERS}/None", headers=user.headers)
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["loc"] == ["path", "server_id"]


# ----- #34 delete -----------------------------------------------------------------------------------

async def test_delete_mcp_server_removes_its_tools(client: TestClient, user: User, other_user: User,
                                                   db: asyncpg.Connection) -> None:
    async with mcp_server(3) as server:
        await register(client, user, server.url)
    server_id = await server_id_of(db, server.url, user.id)
    resp = await client.delete(f"{SERVERS}/{server_id}", headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"MCP server with ID {server_id} was not found"}
    assert await count_rows(db) == (1, 3)
    resp = await client.delete(f"{SERVERS}/{server_id}", headers=user.headers)
    assert resp.status == 204, await resp.text()
    assert await count_rows(db) == (0, 0), "no orphan tools (D19)"
    resp = await client.delete(f"{SERVERS}/{server_id}", headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"MCP server with ID {server_id} was not found"}
