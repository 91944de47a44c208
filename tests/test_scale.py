"""Several service processes on one PostgreSQL and one router: one router session, fan-out, takeover."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from genai_session.utils.context import GenAIContext

from genai_backend.app import create_app
from genai_backend.bus import LEADERSHIP
from genai_backend.config import Settings
from genai_backend.embedded_db import EmbeddedPostgres
from genai_backend.fanout import FANOUT
from genai_backend.jobs.retention import prune_pushes
from genai_backend.sockets import SOCKETS
from tests.agents_helpers import RunningAgent, invoke, run_agent
from tests.bus_fixtures import FakeSocket, wait_for
from tests.conftest import PASSWORD
from tests.instances import TEST_BE_KEY, Instance, leaders, wait_for_leader
from tests.router_double import MASTER_SERVER_BE, RouterDouble, RunningRouter

LOG_LINES = 30


@pytest.fixture
async def router() -> AsyncIterator[RunningRouter]:
    """The router double, expecting the instances' own master key (never the published default)."""
    async with RunningRouter(RouterDouble(master_be_api_key=TEST_BE_KEY)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def workdir() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="genai-scale-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Spawn = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def spawn(database_dsn: str, _truncate_sql: str, router: RunningRouter, workdir: Path,
                http: aiohttp.ClientSession) -> AsyncIterator[Spawn]:
    """Start service processes on the test database and the router double; all stopped afterwards."""
    started: list[Instance] = []
    secret = secrets.token_hex(32)

    async def start(name: str, dsn: str = database_dsn, wait: bool = True) -> Instance:
        instance = Instance(name, dsn, router.url, secret, workdir)
        started.append(instance)
        await instance.start()
        if wait:
            await instance.wait_ready(http)
        return instance

    yield start
    await asyncio.gather(*(i.stop() for i in started))


@pytest.fixture
async def agents() -> AsyncIterator[list[RunningAgent]]:
    started: list[RunningAgent] = []
    yield started
    await asyncio.gather(*(a.stop() for a in started))


async def register_user(http: aiohttp.ClientSession, instance: Instance) -> dict[str, str]:
    username = f"user_{uuid.uuid4().hex[:8]}"
    async with http.post(instance.url + "/api/register", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        user_id = (await resp.json())["id"]
    async with http.post(instance.url + "/api/login/access-token",
                         data={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        token = (await resp.json())["access_token"]
    return {"id": user_id, "token": token, "Authorization": f"Bearer {token}"}


async def register_agent(http: aiohttp.ClientSession, instance: Instance, user: dict[str, str],
                         name: str = "agent") -> dict[str, Any]:
    async with http.post(instance.url + "/api/agents/register", headers={"Authorization": user["Authorization"]},
                         json={"name": name, "description": "d", "input_parameters": {}}) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def active_ids(db: asyncpg.Connection) -> set[str]:
    return {str(r["id"]) for r in await db.fetch("SELECT id FROM agents WHERE is_active")}


def logging_handler(lines: int) -> Callable[..., Awaitable[str]]:
    async def handler(agent_context: GenAIContext, text: str) -> str:
        """Logs numbered lines, then echoes."""
        for number in range(lines):
            agent_context.logger.info(f"line {number}: {text}")
            await asyncio.sleep(0)
        return text

    return handler


# --- fan-out ---------------------------------------------------------------------------------

async def test_agent_logs_reach_socket_on_non_leading_instance_in_order(
        spawn: Spawn, router: RunningRouter, http: aiohttp.ClientSession, agents: list[RunningAgent]) -> None:
    a = await spawn("a")
    assert await wait_for_leader([a], http) is a
    b = await spawn("b")
    ready = await b.ready(http)
    assert ready["leader"] is False and ready["router"]["state"] == "standby"
    user = await register_user(http, b)
    agent = await register_agent(http, a, user, "logger")
    agents.append(await run_agent(router.url, agent["jwt"], "logger", "d", logging_handler(LOG_LINES)))

    async def active_on_b() -> bool:
        async with http.get(b.url + "/api/agents/", headers={"Authorization": user["Authorization"]}) as resp:
            return any(row["is_active"] for row in await resp.json())

    await wait_for(active_on_b)
    session_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with http.ws_connect(b.url.replace("http", "ws") + f"/frontend/ws?token={user['token']}"
                               f"&session_id={session_id}") as ws:
        answer = await invoke(router.url, "test-invoker", agent["id"], {"text": "hi"}, request_id, session_id)
        assert answer.is_success

        def forwarded() -> list[str]:
            return [f["request_payload"]["log_message"] for f in router.double.frames_to(MASTER_SERVER_BE)
                    if f["request_payload"].get("message_type") == "agent_log"
                    and f["request_payload"].get("request_id") == request_id]

        # The numbered lines, and the library's own lines about the invocation.
        await router.double.wait_until(lambda: f"line {LOG_LINES - 1}: hi" in forwarded())
        await asyncio.sleep(0.2)
        received = []
        async with asyncio.timeout(10):
            while len(received) < len(forwarded()):
                frame = await ws.receive_json()
                assert frame["type"] == "agent_log"
                received.append(frame["log"]["message"])
    # In the order the router forwarded them to the leader.
    assert received == forwarded()
    assert [m for m in received if m.startswith("line ")] == [f"line {n}: hi" for n in range(LOG_LINES)]
    assert router.double.max_open[MASTER_SERVER_BE] == 1


async def test_pushes_stored_while_listener_is_away_are_replayed(client: TestClient, db: asyncpg.Connection) -> None:
    user_id = uuid.uuid4()
    socket = FakeSocket()
    client.app[SOCKETS].add(user_id, socket)  # type: ignore[arg-type]
    fanout = client.app[FANOUT]
    await fanout.listening.wait()
    reconnects = fanout.reconnects
    await client.app[SOCKETS].push(user_id, {"n": 0})
    await wait_for(lambda: _true(len(socket.frames) == 1))
    # The listener's connection dies (as in a database restart); frames are pushed meanwhile.
    await db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name = 'genai-backend listener' AND datname = current_database()")
    await wait_for(lambda: _true(not fanout.listening.is_set() or fanout.reconnects > reconnects))
    for n in range(1, 6):
        await client.app[SOCKETS].push(user_id, {"n": n})
    await wait_for(lambda: _true(len(socket.frames) == 6))
    assert [f["n"] for f in socket.frames] == list(range(6))
    assert fanout.reconnects > reconnects


async def _true(value: bool) -> bool:
    return value


async def test_pushes_are_pruned_after_the_retention(client: TestClient, db: asyncpg.Connection) -> None:
    await client.app[SOCKETS].push(uuid.uuid4(), {"old": True})
    await client.app[SOCKETS].push(uuid.uuid4(), {"new": True})
    await db.execute("UPDATE pushes SET created_at = now() - interval '1 hour' WHERE frame LIKE '%old%'")
    from genai_backend.db import POOL

    assert await prune_pushes(client.app[POOL], older_than=600) == 1
    assert [r["frame"] for r in await db.fetch("SELECT frame FROM pushes")] == ['{"new":true}']


# --- caches and revocation across processes ----------------------------------------------------

async def test_write_on_one_instance_is_visible_on_the_other_at_once(
        spawn: Spawn, http: aiohttp.ClientSession, db: asyncpg.Connection) -> None:
    a, b = await asyncio.gather(spawn("a"), spawn("b"))
    user = await register_user(http, a)
    headers = {"Authorization": user["Authorization"]}
    for path in ("/api/agents/", "/api/agents/active?agent_type=all"):
        async with http.get(b.url + path, headers=headers) as resp:  # warms b's catalogue cache
            assert resp.status == 200
    agent = await register_agent(http, a, user, "fresh")
    await db.execute("UPDATE agents SET is_active = true WHERE id = $1", uuid.UUID(agent["id"]))
    async with http.get(b.url + "/api/agents/", headers=headers) as resp:
        assert [row["agent_id"] for row in await resp.json()] == [agent["id"]]
    async with http.get(b.url + "/api/agents/active?agent_type=all", headers=headers) as resp:
        assert agent["id"] in await resp.text()
    async with http.delete(a.url + f"/api/agents/{agent['id']}", headers=headers) as resp:
        assert resp.status in (200, 204), await resp.text()
    async with http.get(b.url + "/api/agents/", headers=headers) as resp:
        assert await resp.json() == []
    # A user deleted (directly in the database) is refused by every instance within the usual bound.
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user["id"]))

    async def refused_by_both() -> bool:
        statuses = []
        for instance in (a, b):
            async with http.get(instance.url + "/api/agents/", headers=headers) as resp:
                statuses.append(resp.status)
        return all(s in (401, 403, 404) for s in statuses)

    await wait_for(refused_by_both, timeout=5)


# --- leadership ------------------------------------------------------------------------------

async def test_one_leader_at_a_time_and_lost_lock_drops_router_session(
        settings: Settings, aiohttp_client: Any, router: RunningRouter, db: asyncpg.Connection) -> None:
    app_settings = replace(settings, start_router=True, router_ws_url=router.url, master_be_api_key=TEST_BE_KEY)
    first = await aiohttp_client(create_app(app_settings))
    second = await aiohttp_client(create_app(app_settings))
    await router.double.wait_for_client(MASTER_SERVER_BE)
    apps = [first.app, second.app]
    await wait_for(lambda: _true(sum(app[LEADERSHIP].leading for app in apps) == 1))
    leader = next(app for app in apps if app[LEADERSHIP].leading)
    connections = router.double.connections
    # The leader's lock connection dies: it drops its router session, and one of the two leads again.
    # (The only advisory lock held: the jobs are off.)
    await db.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    await router.double.wait_until(lambda: router.double.connections > connections, 10)
    await router.double.wait_for_client(MASTER_SERVER_BE)
    await wait_for(lambda: _true(sum(app[LEADERSHIP].leading for app in apps) == 1))
    assert sum(app[LEADERSHIP].elected for app in apps) == 2 and not leader[LEADERSHIP].elected > 1
    assert router.double.max_open[MASTER_SERVER_BE] == 1
    for client in (first, second):
        body = await (await client.get("/ready")).json()
        assert body["leader"] is client.app[LEADERSHIP].leading
        assert body["router"]["state"] == ("connected" if body["leader"] else "standby")


async def test_killed_leader_is_replaced_and_presence_matches_the_router(
        spawn: Spawn, router: RunningRouter, http: aiohttp.ClientSession, db: asyncpg.Connection,
        agents: list[RunningAgent]) -> None:
    instances = list(await asyncio.gather(spawn("a"), spawn("b"), spawn("c")))
    await wait_for_leader(instances, http)
    user = await register_user(http, instances[0])
    rows = [await register_agent(http, instances[0], user, f"churn {n}") for n in range(4)]
    stop = asyncio.Event()

    async def churn(row: dict[str, Any]) -> None:
        # Agents connect and disconnect all through the takeovers.
        while not stop.is_set():
            agent = await run_agent(router.url, row["jwt"], row["name"], "d")
            await asyncio.sleep(0.15)
            await agent.stop()
            await asyncio.sleep(0.05)

    churners = [asyncio.create_task(churn(row)) for row in rows]
    try:
        for _ in range(2):
            leader = await wait_for_leader(instances, http)
            await router.double.wait_for_client(MASTER_SERVER_BE)
            await asyncio.sleep(0.3)
            await leader.kill()
            successor = await wait_for_leader(instances, http)
            assert successor is not leader
            await router.double.wait_for_client(MASTER_SERVER_BE)
    finally:
        stop.set()
        await asyncio.gather(*churners)
    # Every churning agent has left; the router reports nobody, and so does the database.
    await router.double.wait_until(lambda: not [c for c in router.double.clients if c != MASTER_SERVER_BE])
    await wait_for(lambda: _true_async(active_ids(db), set()))
    # Agents that connect after the takeover are active; leaving makes them inactive.
    stayers = [await run_agent(router.url, row["jwt"], row["name"], "d") for row in rows[:2]]
    agents.extend(stayers)
    await wait_for(lambda: _true_async(active_ids(db), {rows[0]["id"], rows[1]["id"]}))
    await stayers[0].stop()
    await wait_for(lambda: _true_async(active_ids(db), {rows[1]["id"]}))
    assert (await active_ids(db)) <= set(router.double.clients)
    assert router.double.max_open[MASTER_SERVER_BE] == 1
    assert len(await leaders(instances, http)) == 1


async def _true_async(value: Awaitable[set[str]], expected: set[str]) -> bool:
    return await value == expected


# --- database restart ------------------------------------------------------------------------

async def test_database_restart_under_load_two_instances_recover_and_keep_writes(
        spawn: Spawn, own_postgres: EmbeddedPostgres, router: RunningRouter, http: aiohttp.ClientSession) -> None:
    dsn = own_postgres.dsn
    a, b = await asyncio.gather(spawn("a", dsn), spawn("b", dsn))
    user = await register_user(http, a)
    headers = {"Authorization": user["Authorization"]}
    acknowledged: list[str] = []
    by_instance = {a.name: 0, b.name: 0}
    stop = asyncio.Event()

    async def writer(instance: Instance) -> None:
        while not stop.is_set():
            agent_id = str(uuid.uuid4())
            try:
                async with http.post(instance.url + "/api/agents/register", headers=headers, json={
                        "id": agent_id, "name": "w", "description": "d", "input_parameters": {}},
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if resp.status == 200:
                        acknowledged.append(agent_id)
                        by_instance[instance.name] += 1
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(writer(i)) for i in (a, b, a, b)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(own_postgres.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_postgres.start)
    restarted = time.monotonic()
    for instance in (a, b):
        await instance.wait_ready(http, timeout=30)
    before = dict(by_instance)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    assert all(by_instance[name] > before[name] for name in by_instance), "writes did not resume on both"
    # One of them leads again and holds the router session.
    await wait_for_leader([a, b], http, timeout=15)
    await router.double.wait_for_client(MASTER_SERVER_BE, timeout=15)
    assert time.monotonic() - restarted < 30
    conn = await asyncpg.connect(dsn)
    try:
        stored = {str(r["id"]) for r in await conn.fetch("SELECT id FROM agents")}
    finally:
        await conn.close()
    assert set(acknowledged) <= stored and acknowledged
    assert router.double.max_open[MASTER_SERVER_BE] == 1
