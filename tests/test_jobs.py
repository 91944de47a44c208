"""Background jobs: MCP/A2A refresh against real servers, log retention, the periodic runner and its wiring."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.db import POOL
from genai_backend.discovery.client import DISCOVERY
from genai_backend.jobs import run_periodically
from genai_backend.jobs.locks import REFRESH_LOCK, RETENTION_LOCK
from genai_backend.jobs.refresh import RefreshReport, refresh_tools
from genai_backend.jobs.retention import delete_expired_logs
from tests.conftest import User, make_user, with_settings
from tests.tool_servers import REIMBURSEMENT_CARD, UvicornServer, card_server, hanging_server, mcp_server

JOB_NAMES = {"tool refresh", "log retention"}


async def refresh(client: TestClient, timeout: float = 5, discovery: Any = None) -> RefreshReport:
    return await refresh_tools(client.app[POOL], discovery or client.app[DISCOVERY], timeout)


async def add_mcp(client: TestClient, user: User, url: str) -> dict[str, Any]:
    resp = await client.post("/api/mcp/servers", json={"server_url": url}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    server_id = (await client.app[POOL].fetchval(
        "SELECT id FROM mcpservers WHERE server_url = $1 AND creator_id = $2", url, uuid.UUID(user.id)))
    return await read_mcp(client, user, server_id)


async def read_mcp(client: TestClient, user: User, server_id: Any) -> dict[str, Any]:
    resp = await client.get(f"/api/mcp/servers/{server_id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def add_card(client: TestClient, user: User, url: str) -> dict[str, Any]:
    resp = await client.post("/api/a2a/agents", json={"server_url": url}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return await read_card(client, user, (await resp.json())["id"])


async def read_card(client: TestClient, user: User, card_id: Any) -> dict[str, Any]:
    resp = await client.get(f"/api/a2a/agents/{card_id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def snapshot(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    """Every refreshable row's identity, timestamp and flag."""
    rows = await db.fetch("""
        SELECT 'server', id, updated_at, is_active FROM mcpservers
        UNION ALL SELECT 'tool', id, updated_at, NULL FROM mcptools
        UNION ALL SELECT 'card', id, updated_at, is_active FROM a2acards
        UNION ALL SELECT 'flow', id, updated_at, is_active FROM agentworkflows
        ORDER BY 1, 2""")
    return [tuple(row) for row in rows]


async def flags(db: asyncpg.Connection, table: str) -> list[bool]:
    return [row[0] for row in await db.fetch(f"SELECT is_active FROM {table} ORDER BY id")]


def custom_tools(tools: dict[str, str]) -> Callable[[], Any]:
    """`make_app` of an MCP server offering `tools` (name → description), each `tool(value: str)`."""
    from mcp.server.mcpserver import MCPServer

    server: Any = MCPServer("custom")
    for name, description in tools.items():
        def tool(value: str) -> str:
            return value
        server.add_tool(tool, name=name, description=description)
    return server.streamable_http_app  # type: ignore[no-any-return]


# ----- MCP and A2A refresh ------------------------------------------------------------------------

async def test_refresh_marks_down_servers_inactive_and_back_active(
        client: TestClient, user: User, other_user: User, db: asyncpg.Connection) -> None:
    async with mcp_server(3) as tools, card_server() as cards:
        for who in (user, other_user):  # D19: every row of a URL, not just the first
            await add_mcp(client, who, tools.url)
            await add_card(client, who, cards.url)
        before = await snapshot(db)
        report = await refresh(client)
        assert sorted(report.reachable) == sorted([tools.url, cards.url[:-1]]) and not report.unreachable
        assert await snapshot(db) == before, "nothing changed, nothing written"

        await tools.stop()
        await cards.stop()
        report = await refresh(client)
        assert sorted(report.unreachable) == sorted([tools.url, cards.url[:-1]])
        assert await flags(db, "mcpservers") == await flags(db, "a2acards") == [False, False]
        assert await db.fetchval("SELECT bool_and(updated_at > created_at) FROM mcpservers") is True
        assert await db.fetchval("SELECT count(*) FROM mcptools") == 6, "a down server keeps its tools"

        await tools.start()
        await cards.start()
        await refresh(client)
        assert await flags(db, "mcpservers") == await flags(db, "a2acards") == [True, True]


async def test_refresh_upserts_tools_by_name(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    server = UvicornServer(custom_tools({"alpha": "A", "beta": "B", "gamma": "C"}), "/mcp")
    async with server:
        before = {t["name"]: t for t in (await add_mcp(client, user, server.url))["mcp_tools"]}
        await server.stop()
        server.make_app = custom_tools({"alpha": "A", "beta": "B changed", "delta": "D"})
        await server.start()
        report = await refresh(client)
    assert report.changed_owners == {uuid.UUID(user.id)}
    stored = await read_mcp(client, user, before["alpha"]["mcp_server_id"])
    after = {t["name"]: t for t in stored["mcp_tools"]}
    assert list(after) == ["alpha", "beta", "delta"]
    assert after["alpha"] == before["alpha"], "unchanged tool untouched"
    assert {k: after["beta"][k] for k in ("id", "alias", "created_at")} == \
        {k: before["beta"][k] for k in ("id", "alias", "created_at")}
    assert after["beta"]["description"] == "B changed" and after["beta"]["updated_at"] > before["beta"]["updated_at"]
    assert after["delta"]["alias"].startswith("delta_") and after["delta"]["created_at"] > before["alpha"]["created_at"]
    assert stored["updated_at"] == stored["created_at"], "the server row itself did not change"


async def test_refresh_stores_changed_card_in_registration_shape(client: TestClient, user: User,
                                                                 db: asyncpg.Connection) -> None:
    async with card_server() as cards:
        before = await add_card(client, user, cards.url)
        cards.card["description"] = "Now also refunds."
        cards.card["skills"][0]["name"] = "Refund Tool"
        cards.card["documentationUrl"] = None
        await refresh(client)
    after = await read_card(client, user, before["id"])
    # D18: the same shape as at registration, name and alias kept.
    assert after["card_content"]["skills"][0]["name"] == "Refund_Tool"
    assert set(after["card_content"]) == set(before["card_content"])
    assert {k: after[k] for k in ("name", "alias", "server_url", "created_at")} == \
        {k: before[k] for k in ("name", "alias", "server_url", "created_at")}
    assert after["description"] == "Now also refunds." and after["updated_at"] > before["updated_at"]
    resp = await client.get("/api/agents/active", params={"agent_type": "a2a"}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    [item] = (await resp.json())["active_connections"]
    assert item["agent_schema"]["description"] == "Now also refunds.\nSKILLS:\nHelps with reimbursement."


@pytest.mark.parametrize("mode", ["500", "invalid-json", "invalid-card"])
async def test_refresh_bad_card_answer_marks_inactive(client: TestClient, user: User, db: asyncpg.Connection,
                                                      mode: str) -> None:
    async with card_server() as cards, mcp_server(3) as tools:
        await add_card(client, user, cards.url)
        await add_mcp(client, user, tools.url)
        if mode == "invalid-card":
            del cards.card["skills"]
        else:
            cards.mode = mode  # type: ignore[assignment]
        report = await refresh(client)
        assert report.unreachable == [cards.url[:-1]] and report.reachable == [tools.url]
        assert await flags(db, "a2acards") == [False]
        cards.mode, cards.card = "agent.json", dict(REIMBURSEMENT_CARD)
        await refresh(client)
        assert await flags(db, "a2acards") == [True]


async def test_refresh_hanging_server_does_not_delay_others(client: TestClient, user: User,
                                                            db: asyncpg.Connection) -> None:
    async with hanging_server() as hang, mcp_server(3) as tools, card_server() as cards:
        await add_mcp(client, user, tools.url)
        await add_card(client, user, cards.url)
        # A hanging server cannot be registered; it stopped answering later.
        await db.execute("INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES ($1, $2, $3, true)",
                         uuid.uuid4(), hang.url + "mcp", uuid.UUID(user.id))
        await db.execute("""INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active,
                            creator_id) VALUES ($1, 'h', 'h_abcdef', 'd', $2, '{}', true, $3)""",
                         uuid.uuid4(), hang.url[:-1], uuid.UUID(user.id))
        started = time.perf_counter()
        report = await refresh(client, timeout=1)
        elapsed = time.perf_counter() - started
    assert elapsed < 2.5, f"the cycle took {elapsed:.2f} s with a 1 s per-server timeout"
    assert sorted(report.unreachable) == sorted([hang.url + "mcp", hang.url[:-1]])
    assert sorted(report.reachable) == sorted([tools.url, cards.url[:-1]])
    assert await db.fetchval("SELECT count(*) FROM mcpservers WHERE is_active") == 1
    assert await db.fetchval("SELECT count(*) FROM a2acards WHERE is_active") == 1


async def test_refresh_failure_of_one_url_is_logged_and_others_go_on(
        client: TestClient, user: User, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    real = client.app[DISCOVERY]

    class Flaky:
        async def tools(self, url: str, timeout: float, headers: Any = None) -> Any:
            if url.endswith("/broken"):
                raise RuntimeError("bug in a lookup")
            return await real.tools(url, timeout, headers)

        async def card(self, url: str, timeout: float) -> Any:
            return await real.card(url, timeout)

    async with mcp_server(3) as tools:
        await add_mcp(client, user, tools.url)
        await db.execute("INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES ($1, $2, $3, true)",
                         uuid.uuid4(), tools.url + "/broken", uuid.UUID(user.id))
        await db.execute("UPDATE mcpservers SET is_active = false WHERE server_url = $1", tools.url)
        with caplog.at_level(logging.ERROR, "genai_backend.jobs.refresh"):
            report = await refresh(client, discovery=Flaky())
    assert report.failed == [tools.url + "/broken"] and report.reachable == [tools.url]
    assert "tool refresh of " + tools.url + "/broken failed" in caplog.text
    assert await db.fetchval("SELECT is_active FROM mcpservers WHERE server_url = $1", tools.url) is True


async def test_refresh_reevaluates_flows_of_changed_owners(client: TestClient, user: User,
                                                           db: asyncpg.Connection) -> None:
    async def add_flow(elements: list[dict[str, str]]) -> uuid.UUID:
        flow_id = uuid.uuid4()
        await db.execute("""INSERT INTO agentworkflows (id, alias, name, description, flow, creator_id, is_active)
                            VALUES ($1, $2, 'f', 'd', $3::json, $4, true)""",
                         flow_id, f"f_{flow_id.hex[:6]}", json.dumps(elements), uuid.UUID(user.id))
        return flow_id

    async with mcp_server(3) as tools, card_server() as cards:
        tool_id = (await add_mcp(client, user, tools.url))["mcp_tools"][0]["id"]
        card_id = (await add_card(client, user, cards.url))["id"]
        good = await add_flow([{"id": tool_id, "type": "mcp"}, {"id": card_id, "type": "a2a"}])
        # D20: a flow with a missing genai member stays inactive whatever the MCP state.
        broken = await add_flow([{"id": tool_id, "type": "mcp"}, {"id": str(uuid.uuid4()), "type": "genai"}])
        await tools.stop()
        await refresh(client)
        state = "SELECT is_active FROM agentworkflows WHERE id = $1"
        assert (await db.fetchval(state, good), await db.fetchval(state, broken)) == (False, False)
        await tools.start()
        await refresh(client)
        assert (await db.fetchval(state, good), await db.fetchval(state, broken)) == (True, False)
        await cards.stop()
        await refresh(client)
        assert await db.fetchval(state, good) is False


async def test_refresh_skipped_while_another_instance_holds_the_lock(client: TestClient, user: User,
                                                                     db: asyncpg.Connection) -> None:
    async with mcp_server(3) as tools:
        await add_mcp(client, user, tools.url)
        await tools.stop()
        await db.execute("SELECT pg_advisory_lock($1)", REFRESH_LOCK)
        try:
            assert (await refresh(client)).skipped is True
            assert await flags(db, "mcpservers") == [True]
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", REFRESH_LOCK)
        assert (await refresh(client)).skipped is False
        assert await flags(db, "mcpservers") == [False]


async def test_refresh_two_instances_never_run_at_once(aiohttp_client: Any, client: TestClient, user: User,
                                                       settings: Settings, db: asyncpg.Connection) -> None:
    second = await aiohttp_client(create_app(settings))  # another instance on the same database
    async with hanging_server() as hang:
        await db.execute("INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES ($1, $2, $3, true)",
                         uuid.uuid4(), hang.url, uuid.UUID(user.id))
        first_cycle = asyncio.create_task(refresh(client, timeout=1))
        await asyncio.sleep(0.3)
        assert (await refresh(second, timeout=1)).skipped is True
        assert (await first_cycle).unreachable == [hang.url]


# ----- log retention -------------------------------------------------------------------------------

async def test_retention_deletes_only_old_logs(client: TestClient, user: User, db: asyncpg.Connection) -> None:
    ages = [8, 8, 9, 30, 400, 6, 0]  # days
    for days in ages:
        await db.execute("""INSERT INTO logs (session_id, request_id, creator_id, message, log_level, created_at)
                            VALUES ($1, $2, $3, $4, 'info', (now() AT TIME ZONE 'UTC') - make_interval(days => $5))""",
                         uuid.uuid4(), uuid.uuid4(), uuid.UUID(user.id), f"{days} days old", days)
    pool = client.app[POOL]
    assert await delete_expired_logs(pool, 7, batch=2) == 5
    assert sorted(r[0] for r in await db.fetch("SELECT message FROM logs")) == ["0 days old", "6 days old"]
    assert await delete_expired_logs(pool, 7) == 0
    assert await delete_expired_logs(pool, 1) == 1
    await db.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK)
    try:
        assert await delete_expired_logs(pool, 0) is None
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)


# ----- the periodic runner and its wiring ----------------------------------------------------------

async def test_run_periodically_logs_failures_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    async def job() -> None:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            raise RuntimeError("first run fails")

    task = asyncio.create_task(run_periodically("test job", job, first_delay=0.05, period=0.02))
    while len(calls) < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "test job failed; next try in 0.02 s" in caplog.text and "first run fails" in caplog.text


async def test_run_periodically_never_overlaps() -> None:
    running, overlap, runs = 0, 0, 0

    async def slow_job() -> None:
        nonlocal running, overlap, runs
        running += 1
        overlap = max(overlap, running)
        await asyncio.sleep(0.05)
        running -= 1
        runs += 1

    task = asyncio.create_task(run_periodically("slow", slow_job, first_delay=0, period=0.001))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlap == 1 and runs >= 3


async def test_jobs_run_in_background_and_stop_on_shutdown(aiohttp_client: Any, settings: Settings,
                                                           password_hash: str, db: asyncpg.Connection) -> None:
    jobs_settings = with_settings(settings, start_jobs=True, refresh_interval_minutes=1 / 60, tool_refresh_timeout=2)
    app_client = await aiohttp_client(create_app(jobs_settings))
    assert {t.get_name() for t in asyncio.all_tasks()} >= JOB_NAMES
    user = await make_user(app_client, password_hash)
    async with mcp_server(3) as tools:
        await add_mcp(app_client, user, tools.url)
        await tools.stop()
        deadline = time.perf_counter() + 10
        while await flags(db, "mcpservers") != [False]:
            assert time.perf_counter() < deadline, "the background refresh never ran"
            await asyncio.sleep(0.1)
    await app_client.close()
    assert not {t.get_name() for t in asyncio.all_tasks()} & JOB_NAMES


async def test_jobs_not_started_when_switched_off(client: TestClient) -> None:
    assert not {t.get_name() for t in asyncio.all_tasks()} & JOB_NAMES


def test_settings_refresh_timeout_from_env(tmp_path: Any) -> None:
    from genai_backend.config import from_env

    env = {"SECRET_KEY": "x" * 32, "POSTGRES_HOST": "db", "TOOL_REFRESH_TIMEOUT": "2.5",
           "MASTER_BE_API_KEY": "own-key::master_server_be"}
    assert from_env(env, project_dir=tmp_path).tool_refresh_timeout == 2.5
    assert from_env({**env, "TOOL_REFRESH_TIMEOUT": "0"}, project_dir=tmp_path).tool_refresh_timeout == 10.0
