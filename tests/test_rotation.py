"""SECRET_KEY rotation end to end: previous keys, `rotate-secrets` beside running chats, start-up checks."""
from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import jwt as pyjwt
import orjson
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.auth import secrets
from genai_backend.auth.rotation import check_keys, rotate_secrets
from genai_backend.config import ConfigError, Settings
from genai_backend.db import POOL, create_pool
from genai_backend.discovery.client import DISCOVERY
from genai_backend.jobs.refresh import refresh_tools
from tests.agents_helpers import RunningAgent, run_master_agent
from tests.bus_fixtures import backend_on_router, register_agent
from tests.chat_fixtures import API_KEY, chat_frame, open_socket, receive_reply, setup_llm
from tests.conftest import PASSWORD, User, login, register_user
from tests.router_double import MASTER_SERVER_ML, RunningRouter
from tests.tool_servers import bearer_mcp_server

ROOT = Path(__file__).resolve().parent.parent
OLD, NEW = "old-key-" + "a" * 32, "new-key-" + "b" * 32
TOKEN = "mcp-token-for-rotation"


async def chat_once(client: TestClient, user: User, text: str) -> str:
    ws = await open_socket(client, user)
    try:
        await ws.send_json(chat_frame(text))
        reply = await receive_reply(ws, timeout=10)
    finally:
        await ws.close()
    answer: str = reply["response"]["response"]["response"]
    return answer


async def key_ids(db: asyncpg.Connection) -> list[str | None]:
    rows = await db.fetch("SELECT secret_key_id FROM modelproviders UNION ALL SELECT secret_key_id FROM mcpservers")
    return [row["secret_key_id"] for row in rows]


async def test_rotation_end_to_end(aiohttp_client: Any, settings: Settings, router: RunningRouter,
                                   db: asyncpg.Connection) -> None:
    # Before: everything under the old key.
    before = await aiohttp_client(create_app(replace(settings, secret_key=OLD)))
    info = await register_user(before)
    user = User(info, await login(before, info["username"]))
    await setup_llm(before, user)
    agent = await register_agent(before, user)
    tokens = {TOKEN: ["tools"]}
    async with bearer_mcp_server(tokens) as mcp:
        resp = await before.post("/api/mcp/servers", headers=user.headers,
                                 json={"server_url": mcp.url, "headers": {"Authorization": f"Bearer {TOKEN}"}})
        assert resp.status == 200, await resp.text()
        await before.close()

        # Restarted with the new key and the old one as previous.
        rotated = replace(settings, secret_key=NEW, secret_key_previous=(OLD,))
        client = await backend_on_router(aiohttp_client, rotated, router, master_agent_timeout=10)
        master: RunningAgent = await run_master_agent(router.url, api_base_url=str(client.make_url("/")),
                                                      call_back=True)
        try:
            await router.double.wait_for_client(MASTER_SERVER_ML)
            # The session token of before the restart still works, chats included.
            assert (await client.get("/api/agents/", headers=user.headers)).status == 200
            agent_headers = {"Authorization": f"Bearer {agent['jwt']}"}
            assert (await client.get(f"/api/agents/{agent['id']}", headers=agent_headers)).status == 200
            assert await chat_once(client, user, "before rotation") == "echo: before rotation"
            assert master.calls[-1].kwargs["configs"]["api_key"] == API_KEY
            fresh = await login(client, info["username"], PASSWORD)
            assert pyjwt.decode(fresh, NEW, algorithms=["HS256"])["sub"] == info["id"]

            # Two rotations at once (as from two hosts) while chats go on.
            pools = [await create_pool(settings.database_dsn or "", 1, 2) for _ in range(2)]
            try:
                chats = [asyncio.create_task(chat_once(client, user, f"during {i}")) for i in range(4)]
                reports = await asyncio.gather(*(rotate_secrets(pool, rotated.secret_keys, batch_size=1)
                                                 for pool in pools))
                assert await asyncio.gather(*chats) == [f"echo: during {i}" for i in range(4)]
            finally:
                for pool in pools:
                    await pool.close()
            assert sum(r.reencrypted for r in reports) == 2
            # The stored agent token (what its owner copies) is signed again, same claims.
            assert sum(r.agent_tokens for r in reports) == 1
            stored_jwt = await db.fetchval("SELECT jwt FROM agents")
            assert stored_jwt != agent["jwt"]
            assert pyjwt.decode(stored_jwt, NEW, algorithms=["HS256"]) == pyjwt.decode(
                agent["jwt"], OLD, algorithms=["HS256"])
            # The run that finished first may still count the row the other one was working on.
            assert min(r.remaining for r in reports) == 0 and not any(r.unreadable for r in reports)
            assert await key_ids(db) == [secrets.key_id(NEW)] * 2
            provider_key = await db.fetchval("SELECT api_key FROM modelproviders")
            assert secrets.decrypt_sync(provider_key, NEW) == API_KEY
            headers = await db.fetchval("SELECT headers FROM mcpservers")
            assert orjson.loads(secrets.decrypt_sync(headers, NEW)) == {"Authorization": f"Bearer {TOKEN}"}
            # Run again: nothing left to do.
            again = await rotate_secrets(client.app[POOL], rotated.secret_keys)
            assert (again.reencrypted, again.already_current, again.remaining) == (0, 0, 0)
        finally:
            await master.stop()

        # The previous key dropped: stored secrets need only the new one; old tokens are refused.
        only_new = replace(settings, secret_key=NEW)
        last = await backend_on_router(aiohttp_client, only_new, router, master_agent_timeout=10)
        master = await run_master_agent(router.url, api_base_url=str(last.make_url("/")), call_back=True)
        try:
            await router.double.wait_for_client(MASTER_SERVER_ML)
            assert (await last.get("/api/agents/", headers=user.headers)).status == 401
            assert (await last.get(f"/api/agents/{agent['id']}", headers=agent_headers)).status == 401
            new_agent_headers = {"Authorization": f"Bearer {stored_jwt}"}
            assert (await last.get(f"/api/agents/{agent['id']}", headers=new_agent_headers)).status == 200
            user_now = User(info, fresh)
            assert await chat_once(last, user_now, "after rotation") == "echo: after rotation"
            await db.execute("UPDATE mcpservers SET is_active = false")
            await refresh_tools(last.app[POOL], last.app[DISCOVERY], 5, secret_keys=only_new.secret_keys)
            assert await db.fetchval("SELECT is_active FROM mcpservers") is True
        finally:
            await master.stop()


async def test_rotation_skips_locked_rows_and_resumes(settings: Settings, aiohttp_client: Any,
                                                      db: asyncpg.Connection, password_hash: str) -> None:
    client = await aiohttp_client(create_app(replace(settings, secret_key=OLD)))
    from tests.conftest import make_user

    user = await make_user(client, password_hash)
    for name in ("openai", "anthropic", "mistral"):
        await setup_llm(client, user, provider=name, config=f"cfg-{name}")
    keys = (NEW, OLD)
    async with db.transaction():
        # An edit in progress holds one row.
        await db.execute("SELECT id FROM modelproviders WHERE name = 'openai' FOR UPDATE")
        first = await rotate_secrets(client.app[POOL], keys, batch_size=2)
    assert (first.reencrypted, first.remaining) == (2, 1)
    second = await rotate_secrets(client.app[POOL], keys)
    assert (second.reencrypted, second.remaining) == (1, 0)
    # A provider saved later (by the service, under the new key) only gets its fingerprint recorded.
    await db.execute("UPDATE modelproviders SET api_key = $1 WHERE name = 'mistral'",
                     secrets.encrypt_sync("sk-other", NEW))
    assert await db.fetchval("SELECT secret_key_id FROM modelproviders WHERE name = 'mistral'") is None
    third = await rotate_secrets(client.app[POOL], keys)
    assert (third.reencrypted, third.already_current, third.remaining) == (0, 1, 0)


async def test_wrong_previous_key_is_a_start_up_error(settings: Settings, aiohttp_client: Any,
                                                      db: asyncpg.Connection, password_hash: str) -> None:
    client = await aiohttp_client(create_app(replace(settings, secret_key=OLD)))
    from tests.conftest import make_user

    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    pool = client.app[POOL]
    # Unrecorded (as the reference writes them): found out by decrypting a sample.
    with pytest.raises(ConfigError, match="neither SECRET_KEY nor one of SECRET_KEY_PREVIOUS"):
        await check_keys(pool, (NEW, "not-the-old-key"))
    await check_keys(pool, (NEW, OLD))
    # Recorded: found out from the fingerprints alone.
    await rotate_secrets(pool, (OLD,))
    with pytest.raises(ConfigError, match="1 stored secret"):
        await check_keys(pool, (NEW, "not-the-old-key"))
    # Not a ciphertext at all: no key is the wrong one.
    await db.execute("UPDATE modelproviders SET api_key = 'plain', secret_key_id = NULL")
    await check_keys(pool, (NEW,))


def _env(settings: Settings, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "SECRET_KEY"))}
    env.update({"SQLALCHEMY_ASYNC_DATABASE_URI": settings.database_dsn or "", "ROUTER_WS_URL": "ws://127.0.0.1:1/ws",
                "HOST": "127.0.0.1", "PORT": "0", "START_JOBS": "false",
                "MASTER_BE_API_KEY": "rotation-test-key"}, **values)
    return env


async def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "genai_backend", *args, env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_rotate_secrets_and_start_up_refusal(settings: Settings, aiohttp_client: Any,
                                                       db: asyncpg.Connection, password_hash: str) -> None:
    client = await aiohttp_client(create_app(replace(settings, secret_key=OLD)))
    from tests.conftest import make_user

    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    await client.close()
    code, out, err = await _run("rotate-secrets", env=_env(settings, SECRET_KEY=NEW, SECRET_KEY_PREVIOUS=OLD))
    assert code == 0, err
    assert "rotate-secrets: re-encrypted 1, already under the current key 0, unreadable 0" in out
    assert "remaining 0" in out
    assert await key_ids(db) == [secrets.key_id(NEW)]
    # The service refuses to start on a key that opens nothing, and says why.
    code, out, err = await _run(env=_env(settings, SECRET_KEY="third-key-" + "c" * 30,
                                         SECRET_KEY_PREVIOUS="wrong-" + "d" * 30))
    assert code == 2
    assert "genai-backend: 1 stored secret(s) were encrypted with a key that is neither SECRET_KEY" in err
