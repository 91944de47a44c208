"""MCP servers that need credentials: request headers stored encrypted, masked, used at every lookup."""
from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.auth import secrets
from genai_backend.config import SETTINGS
from genai_backend.db import POOL
from genai_backend.discovery.client import DISCOVERY
from genai_backend.jobs.refresh import refresh_tools
from tests.conftest import User
from tests.tool_servers import api_key_mcp_server, bearer_mcp_server

SERVERS = "/api/mcp/servers"
TOKEN = "s3cr3t-bearer-token-0123456789"
MASKED = {"Authorization": "********"}


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(client: TestClient, user: User, url: str, headers: Any = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"server_url": url}
    if headers is not None:
        body["headers"] = headers
    resp = await client.post(SERVERS, json=body, headers=user.headers)
    return resp.status, await resp.json()


async def server_row(db: asyncpg.Connection, url: str, user: User) -> asyncpg.Record:
    row = await db.fetchrow("SELECT id, headers, header_names, secret_key_id, is_active, unavailable_reason "
                            "FROM mcpservers WHERE server_url = $1 AND creator_id = $2", url, uuid.UUID(user.id))
    assert row is not None
    return row


async def read(client: TestClient, user: User, server_id: Any) -> dict[str, Any]:
    resp = await client.get(f"{SERVERS}/{server_id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def refresh(client: TestClient) -> None:
    await refresh_tools(client.app[POOL], client.app[DISCOVERY], 5, secret_keys=client.app[SETTINGS].secret_keys)


async def test_server_needing_a_token_is_refused_clearly(client: TestClient, user: User,
                                                         db: asyncpg.Connection) -> None:
    tokens = {TOKEN: ["tools"], "reader": ["read"]}
    async with bearer_mcp_server(tokens) as server:
        status, body = await post(client, user, server.url)
        assert status == 400
        assert body["detail"].startswith(f"MCP server on: {server.url} answered 401 Unauthorized: it needs credentials")
        for headers, code in ((bearer("wrong"), "401 Unauthorized"), (bearer("reader"), "403 Forbidden")):
            status, body = await post(client, user, server.url, headers)
            assert status == 400
            assert body == {"detail": f"MCP server on: {server.url} answered {code}: the credentials given in "
                                      "'headers' are refused or insufficient"}
    assert await db.fetchval("SELECT count(*) FROM mcpservers") == 0


async def test_bearer_token_is_stored_encrypted_and_never_shown(client: TestClient, user: User,
                                                                db: asyncpg.Connection,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async with bearer_mcp_server({TOKEN: ["tools"]}) as server:
        with caplog.at_level(logging.DEBUG):
            resp = await client.post(SERVERS, json={"server_url": server.url, "headers": bearer()},
                                     headers=user.headers)
            text = await resp.text()
            assert resp.status == 200, text
            created = orjson.loads(text)
            assert [t["title"] for t in created["mcp_tools"]][:1] and created["headers"] == MASKED
            row = await server_row(db, server.url, user)
            listed = await (await client.get(SERVERS, headers=user.headers)).text()
            one = await (await client.get(f"{SERVERS}/{row['id']}", headers=user.headers)).text()
    key = client.app[SETTINGS].secret_key
    assert TOKEN not in row["headers"] and row["secret_key_id"] == secrets.key_id(key)
    assert orjson.loads(secrets.decrypt_sync(row["headers"], key)) == bearer()
    assert orjson.loads(row["header_names"]) == ["Authorization"]
    for body in (text, listed, one):
        assert TOKEN not in body
    assert orjson.loads(one)["headers"] == MASKED and orjson.loads(listed)[0]["headers"] == MASKED
    assert len(orjson.loads(one)["mcp_tools"]) == 3
    assert not [r for r in caplog.records if TOKEN in r.getMessage() or TOKEN in str(r.args)]


async def test_api_key_header_variant(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    async with api_key_mcp_server("k-123", header="X-API-Key") as server:
        assert (await post(client, user, server.url))[0] == 400
        status, body = await post(client, user, server.url, {"X-API-Key": "k-123"})
        assert status == 200, body
        assert body["headers"] == {"X-API-Key": "********"}
        await db.execute("UPDATE mcpservers SET is_active = false")
        await refresh(client)
    row = await server_row(db, server.url, user)
    assert row["is_active"] is True and row["unavailable_reason"] is None


async def test_refresh_uses_the_headers_and_reports_401(client: TestClient, user: User,
                                                        db: asyncpg.Connection) -> None:
    tokens = {TOKEN: ["tools"]}
    async with bearer_mcp_server(tokens) as server:
        assert (await post(client, user, server.url, bearer()))[0] == 200
        server_id = (await server_row(db, server.url, user))["id"]
        await refresh(client)
        assert (await server_row(db, server.url, user))["is_active"] is True
        tokens.pop(TOKEN)  # revoked on the server's side
        await refresh(client)
        row = await server_row(db, server.url, user)
        assert row["is_active"] is False and row["unavailable_reason"] == "the server answered 401 Unauthorized"
        shown = await read(client, user, server_id)
        assert shown["is_active"] is False
        assert shown["unavailable_reason"] == "the server answered 401 Unauthorized"
        # A refused new token changes nothing; an accepted one brings the server back.
        resp = await client.patch(f"{SERVERS}/{server_id}", json={"headers": bearer("new")}, headers=user.headers)
        assert resp.status == 400 and "401 Unauthorized" in (await resp.json())["detail"]
        assert (await server_row(db, server.url, user))["headers"] == row["headers"]
        tokens["new"] = ["tools"]
        resp = await client.patch(f"{SERVERS}/{server_id}", json={"headers": bearer("new")}, headers=user.headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["is_active"] is True and body["headers"] == MASKED and "unavailable_reason" not in body
        assert "new" not in await resp.text()
        await refresh(client)
    row = await server_row(db, server.url, user)
    assert orjson.loads(secrets.decrypt_sync(row["headers"], client.app[SETTINGS].secret_key)) == bearer("new")


async def test_same_url_with_different_tokens_is_looked_up_per_token(client: TestClient, user: User,
                                                                     other_user: User, db: asyncpg.Connection) -> None:
    tokens = {TOKEN: ["tools"], "other": ["tools"]}
    async with bearer_mcp_server(tokens) as server:
        assert (await post(client, user, server.url, bearer()))[0] == 200
        assert (await post(client, other_user, server.url, bearer("other")))[0] == 200
        tokens.pop("other")
        await refresh(client)
        assert (await server_row(db, server.url, user))["is_active"] is True
        assert (await server_row(db, server.url, other_user))["is_active"] is False
        # Registering again without headers uses the stored ones.
        status, body = await post(client, user, server.url)
        assert status == 200 and body["headers"] == MASKED


async def test_patch_removes_headers_and_unknown_server_is_400(client: TestClient, user: User,
                                                               db: asyncpg.Connection) -> None:
    async with api_key_mcp_server("k", header="X-Key") as secured:
        assert (await post(client, user, secured.url, {"X-Key": "k"}))[0] == 200
        server_id = (await server_row(db, secured.url, user))["id"]
        resp = await client.patch(f"{SERVERS}/{server_id}", json={"headers": None}, headers=user.headers)
        assert resp.status == 400  # the server needs it
    missing = uuid.uuid4()
    resp = await client.patch(f"{SERVERS}/{missing}", json={"headers": {}}, headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"MCP server with id: {missing} was not found"}


@pytest.mark.parametrize("headers", [
    {"Host": "evil"}, {"Mcp-Session-Id": "x"}, {"Bad Name": "x"}, {"Authorization": 5},
    {"Authorization": "Bearer x\r\nX-Injected: 1"}, "Bearer x", {f"X-{i}": "v" for i in range(21)},
])
async def test_bad_headers_are_422_without_echoing_values(client: TestClient, user: User, db: asyncpg.Connection,
                                                          headers: Any) -> None:
    resp = await client.post(SERVERS, json={"server_url": "http://127.0.0.1:1/mcp", "headers": headers},
                             headers=user.headers)
    assert resp.status == 422, await resp.text()
    [error] = (await resp.json())["detail"]
    assert error["loc"] == ["body", "headers"]
    assert "Bearer x" not in await resp.text() and "evil" not in await resp.text()
    assert await db.fetchval("SELECT count(*) FROM mcpservers") == 0
