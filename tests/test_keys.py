"""API keys: lifecycle (only a hash stored), validation, scopes, expiry, revocation seen by another process, WebSocket."""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from genai_backend.config import Settings
from tests.agents_helpers import RunningAgent
from tests.bus_fixtures import backend_on_router
from tests.chat_fixtures import chat_frame, receive_close, receive_reply, setup_llm
from tests.conftest import User, make_user
from tests.router_double import RunningRouter
from tests.test_ws import start_master

ROOT = Path(__file__).resolve().parent.parent
INVALID = {"detail": "Token is not valid or expired. Please log in again"}
KEYS_REFUSED = {"detail": "API keys cannot be used here: this endpoint needs a user token"}


async def create_key(client: TestClient, user: User, expect: int = 201, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/keys", json={"name": "my key", **body}, headers=user.headers)
    assert resp.status == expect, await resp.text()
    return dict(await resp.json())


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# --- lifecycle -----------------------------------------------------------------------------------

async def test_create_api_key_shows_key_once_and_stores_only_its_hash(
        client: TestClient, user: User, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await create_key(client, user, name="  nightly job ")
    key = created["key"]
    assert set(created) == {"id", "name", "prefix", "scopes", "expires_at", "created_at", "last_used_at", "key"}
    assert key.startswith("gk_") and len(key) == 3 + 43
    assert created["prefix"] == key[:11]
    assert (created["name"], created["scopes"], created["expires_at"], created["last_used_at"]) == \
        ("nightly job", ["chat"], None, None)
    assert abs(_utc(created["created_at"]) - _now()) < dt.timedelta(minutes=1)

    row = await db.fetchrow("SELECT user_id, key_hash, prefix FROM api_keys WHERE id = $1", uuid.UUID(created["id"]))
    assert str(row["user_id"]) == user.id
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    # Not in any column of any table, not even as its random part without the prefix.
    for (table,) in await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
        dump = "".join(r[0] for r in await db.fetch(f'SELECT t::text FROM "{table}" t'))
        assert key[3:] not in dump, table

    resp = await client.get("/api/keys", headers=user.headers)
    assert resp.status == 200
    listed = await resp.json()
    assert listed == [{k: v for k, v in created.items() if k != "key"}]
    assert key[3:] not in await resp.text()

    resp = await client.get("/api/chats", headers=bearer(created))
    assert resp.status == 200, await resp.text()
    resp = await client.delete(f"/api/keys/{created['id']}", headers=user.headers)
    assert resp.status == 204
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0
    resp = await client.get("/api/chats", headers=bearer(created))
    assert (resp.status, await resp.json()) == (401, INVALID)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.delete(f"/api/keys/{created['id']}", headers=user.headers)
    assert (resp.status, await resp.json()) == (404, {"detail": f"API key {created['id']} was not found"})
    assert not [r for r in caplog.records if key[3:] in r.getMessage()]


async def test_list_api_keys_is_per_user_oldest_first(client: TestClient, user: User, other_user: User) -> None:
    first = await create_key(client, user, name="first")
    second = await create_key(client, user, name="second", scopes=["read"])
    await create_key(client, other_user, name="theirs")
    resp = await client.get("/api/keys", headers=user.headers)
    assert [k["id"] for k in await resp.json()] == [first["id"], second["id"]]
    # Another user's key is answered like a missing one, and survives.
    resp = await client.delete(f"/api/keys/{first['id']}", headers=other_user.headers)
    assert resp.status == 404
    resp = await client.get("/api/chats", headers=bearer(first))
    assert resp.status == 200


async def test_last_used_at_is_written_at_most_once_a_minute(client: TestClient, user: User,
                                                             db: asyncpg.Connection) -> None:
    key = await create_key(client, user, scopes=["read"])
    key_id = uuid.UUID(key["id"])
    for _ in range(3):
        resp = await client.get("/api/agents/", headers=bearer(key))
        assert resp.status == 200
    used = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    assert used is not None and abs(used - _now()) < dt.timedelta(minutes=1)
    # Three requests, one write: xmin is the id of the transaction that last wrote the row.
    writer = await db.fetchval("SELECT xmin::text FROM api_keys WHERE id = $1", key_id)
    await client.get("/api/agents/", headers=bearer(key))
    assert await db.fetchval("SELECT xmin::text FROM api_keys WHERE id = $1", key_id) == writer
    await db.execute("UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1", key_id)
    stale = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id)
    await client.get("/api/agents/", headers=bearer(key))
    assert await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id) > stale
    resp = await client.get("/api/keys", headers=user.headers)
    [listed] = await resp.json()
    assert listed["last_used_at"] is not None


@pytest.mark.parametrize(("body", "loc", "type_"), [
    ({}, ["body", "name"], "missing"),
    ({"name": "   "}, ["body", "name"], "string_too_short"),
    ({"name": "x" * 101}, ["body", "name"], "string_too_long"),
    ({"name": "k", "scopes": ["admin"]}, ["body", "scopes", 0], "enum"),
    ({"name": "k", "scopes": []}, ["body", "scopes"], "value_error"),
    ({"name": "k", "scopes": "chat"}, ["body", "scopes"], "list_type"),
    ({"name": "k", "expires_in": 59}, ["body", "expires_in"], "greater_than_equal"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00"}, ["body", "expires_at"], "datetime_future"),
    ({"name": "k", "expires_at": "tomorrow"}, ["body", "expires_at"], "datetime_parsing"),
    ({"name": "k", "expires_in": 600, "expires_at": "2999-01-01T00:00:00"}, ["body"], "value_error"),
    ({"name": "k", "key": "gk_mine"}, ["body", "key"], "extra_forbidden"),
])
async def test_create_api_key_validates(client: TestClient, user: User, db: asyncpg.Connection,
                                        body: dict[str, Any], loc: list[Any], type_: str) -> None:
    resp = await client.post("/api/keys", json=body, headers=user.headers)
    assert resp.status == 422, await resp.text()
    [problem] = (await resp.json())["detail"]
    assert (problem["loc"], problem["type"]) == (loc, type_)
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_create_api_key_with_lifetime_or_expiry(client: TestClient, user: User) -> None:
    lifetime = await create_key(client, user, expires_in=3600, scopes=["manage", "chat", "manage"])
    assert lifetime["scopes"] == ["chat", "manage"]
    assert abs(_utc(lifetime["expires_at"]) - (_now() + dt.timedelta(hours=1))) < dt.timedelta(minutes=1)
    # An offset is converted to UTC; the answer, like every timestamp of the API, has none.
    fixed = await create_key(client, user, expires_at="2999-06-01T12:00:00+02:00")
    assert fixed["expires_at"] == "2999-06-01T10:00:00"


async def test_expired_api_key_is_refused(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    key = await create_key(client, user, expires_in=60)
    resp = await client.get("/api/chats", headers=bearer(key))
    assert resp.status == 200
    await db.execute("UPDATE api_keys SET expires_at = (now() AT TIME ZONE 'UTC') - interval '1 second'")
    resp = await client.get("/api/chats", headers=bearer(key))
    assert (resp.status, await resp.json()) == (401, INVALID)
    # Still listed, so the user sees why it stopped working.
    resp = await client.get("/api/keys", headers=user.headers)
    assert [k["id"] for k in await resp.json()] == [key["id"]]


async def test_api_key_of_deleted_user_is_refused(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    key = await create_key(client, user)
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user.id))
    resp = await client.get("/api/chats", headers=bearer(key))
    assert (resp.status, await resp.json()) == (401, INVALID)


# --- scopes --------------------------------------------------------------------------------------

async def test_api_keys_cannot_create_list_or_delete_keys(client: TestClient, user: User,
                                                          db: asyncpg.Connection) -> None:
    key = await create_key(client, user, scopes=["chat", "read", "manage"])
    for method, url, body in (("POST", "/api/keys", {"name": "child"}), ("GET", "/api/keys", None),
                              ("DELETE", f"/api/keys/{key['id']}", None)):
        resp = await client.request(method, url, json=body, headers=bearer(key))
        assert (resp.status, await resp.json()) == (403, KEYS_REFUSED), (method, url)
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_chat_key_chats_but_cannot_manage(client: TestClient, user: User) -> None:
    key = bearer(await create_key(client, user))  # the default: chat only
    session = str(uuid.uuid4())
    resp = await client.post("/api/chats", json={"title": "by key", "session_id": session}, headers=key)
    assert resp.status == 200, await resp.text()
    resp = await client.get("/api/chat", params={"session_id": session}, headers=key)
    assert resp.status == 200 and (await resp.json())["total_count"] == 0
    form = aiohttp.FormData()
    form.add_field("file", b"attached", filename="a.txt", content_type="text/plain")
    resp = await client.post("/files", data=form, headers=key)
    assert resp.status == 201, await resp.text()
    resp = await client.get(f"/files/{(await resp.json())['id']}", headers=key)
    assert await resp.read() == b"attached"
    for method, url, body, scope in (
            ("POST", "/api/agents/register", {"name": "a", "description": "d", "input_parameters": {}}, "'manage'"),
            ("POST", "/api/llm/model/provider", {"name": "openai", "api_key": "sk", "metadata": {}}, "'manage'"),
            ("GET", "/api/agents/", None, "'read'")):
        resp = await client.request(method, url, json=body, headers=key)
        assert (resp.status, await resp.json()) == (403, {"detail": f"This API key lacks the {scope} scope"})
        assert resp.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


async def test_read_key_reads_and_manage_key_manages(client: TestClient, user: User) -> None:
    read, manage = bearer(await create_key(client, user, scopes=["read"])), \
        bearer(await create_key(client, user, scopes=["manage"]))
    resp = await client.post("/api/agents/register", headers=manage,
                             json={"name": "by key", "description": "d", "input_parameters": {}})
    assert resp.status == 200, await resp.text()
    agent_id = (await resp.json())["id"]
    resp = await client.get(f"/api/agents/{agent_id}", headers=read)
    assert resp.status == 200 and (await resp.json())["agent_name"] == "by_key"
    resp = await client.get("/api/chats", headers=read)
    assert resp.status == 200
    resp = await client.delete(f"/api/agents/{agent_id}", headers=read)
    assert (resp.status, await resp.json()) == (403, {"detail": "This API key lacks the 'manage' scope"})
    resp = await client.get("/api/chat", params={"session_id": str(uuid.uuid4())}, headers=manage)
    assert (resp.status, await resp.json()) == (403, {"detail": "This API key lacks the 'chat' or 'read' scope"})
    resp = await client.delete(f"/api/agents/{agent_id}", headers=manage)
    assert resp.status == 204


async def test_openapi_documents_keys(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["APIKeyBearer"]["scheme"] == "bearer"
    create = spec["paths"]["/api/keys"]["post"]
    assert create["security"] == [{"OAuth2PasswordBearer": []}]
    assert {"201", "403", "422"} <= set(create["responses"])
    assert "delete" in spec["paths"]["/api/keys/{key_id}"]
    manage = spec["paths"]["/api/agents/register"]["post"]
    assert {"APIKeyBearer": []} in manage["security"] and manage["x-api-key-scopes"] == ["manage"]
    assert "403" in manage["responses"]


# --- revocation on another process ---------------------------------------------------------------

_CHILD = """
import asyncio, os, sys
from pathlib import Path
from aiohttp import web
from genai_backend.app import create_app
from genai_backend.config import Settings

async def main() -> None:
    data = Path(os.environ["CHILD_DATA_DIR"])
    settings = Settings(secret_key=os.environ["CHILD_SECRET_KEY"], database_dsn=os.environ["CHILD_DSN"],
                        data_dir=data, files_dir=data / "files", apply_migrations=False, start_router=False,
                        start_jobs=False, router_ws_url="ws://127.0.0.1:1/ws", db_pool_min=1, db_pool_max=2)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent lets go
    await runner.cleanup()

asyncio.run(main())
"""


@pytest.fixture
async def other_process(settings: Settings, tmp_path: Path) -> AsyncIterator[str]:
    """The service in a second process on the same database: its base URL."""
    env = {**os.environ, "CHILD_DATA_DIR": str(tmp_path / "child"), "CHILD_SECRET_KEY": settings.secret_key,
           "CHILD_DSN": str(settings.database_dsn)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, env=env, cwd=ROOT,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        yield f"http://127.0.0.1:{port}"
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_revoked_key_is_refused_at_once_by_another_process(client: TestClient, user: User,
                                                                 other_process: str) -> None:
    key = await create_key(client, user, scopes=["read"])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{other_process}/api/agents/", headers=bearer(key)) as resp:
            assert resp.status == 200, await resp.text()
        resp = await client.delete(f"/api/keys/{key['id']}", headers=user.headers)
        assert resp.status == 204
        # The very next request, on the other process, without waiting: no cache holds the key.
        async with http.get(f"{other_process}/api/agents/", headers=bearer(key)) as resp:
            assert (resp.status, await resp.json()) == (401, INVALID)


# --- the WebSocket -------------------------------------------------------------------------------

@pytest.fixture
async def chat_client(aiohttp_client: Any, settings: Settings, router: RunningRouter) -> TestClient:
    return await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)


async def test_websocket_chat_with_key_then_history_with_it(chat_client: TestClient, router: RunningRouter,
                                                            running: list[RunningAgent], password_hash: str) -> None:
    client = chat_client
    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    master = await start_master(running, client, router)
    key = await create_key(client, user)
    session = uuid.uuid4()
    ws = await client.ws_connect(f"/frontend/ws?token={key['key']}&session_id={session}", autoclose=False)
    await ws.send_json(chat_frame("hello by key"))
    answer = (await receive_reply(ws))["response"]
    assert answer["response"]["response"] == "echo: hello by key"
    assert master.calls[0].kwargs["user_id"] == user.id
    resp = await client.get("/api/chat", params={"session_id": str(session)}, headers=bearer(key))
    assert [i["content"] for i in (await resp.json())["items"]][1] == "hello by key"
    # Revoked while the socket is open: the next message is refused and the socket closed.
    resp = await client.delete(f"/api/keys/{key['id']}", headers=user.headers)
    assert resp.status == 204
    await ws.send_json(chat_frame("still there?"))
    assert await receive_reply(ws) == {"error": "JWT token is invalid or expired"}
    code, _ = await receive_close(ws)
    assert code == 1008
    assert len(master.calls) == 1


async def test_websocket_handshake_with_bad_or_unscoped_key_is_refused(client: TestClient, user: User,
                                                                       db: asyncpg.Connection) -> None:
    read = await create_key(client, user, scopes=["read", "manage"])
    expired = await create_key(client, user)
    await db.execute("UPDATE api_keys SET expires_at = (now() AT TIME ZONE 'UTC') - interval '1 second' "
                     "WHERE id = $1", uuid.UUID(expired["id"]))
    for token, detail in ((read["key"], "This API key lacks the 'chat' scope"),
                          (expired["key"], "JWT token is invalid or expired"),
                          ("gk_" + "x" * 43, "JWT token is invalid or expired")):
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect(f"/frontend/ws?token={token}")
        assert info.value.status == 403, detail
        # The same check without the upgrade shows the reason.
        resp = await client.get("/frontend/ws", params={"token": token})
        assert (resp.status, await resp.json()) == (403, {"detail": detail})
    ok = await create_key(client, user)
    ws = await client.ws_connect(f"/frontend/ws?token={ok['key']}")
    await ws.close()
