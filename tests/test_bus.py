"""The back-end on a router double with real genai_session agents (agent-bus.md §4-§8).

Timings are printed (`pytest -s`) as `MEASURE <what> <ms>` lines.
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from genai_session.utils.context import GenAIContext

from genai_backend.app import create_app
from genai_backend.auth.tokens import issue_agent_token
from genai_backend.bus.handlers import NAME_TOO_LONG, NOT_REGISTERED, dispatch
from genai_backend.bus.session import ROUTER
from genai_backend.config import SETTINGS, Settings
from genai_backend.sockets import SOCKETS
from tests.agents_helpers import RawClient, RunningAgent, invoke, run_agent, run_master_agent
from tests.bus_fixtures import FakeSocket, RecordingBus, backend_on_router, is_active, measure, register_agent, wait_for
from tests.conftest import User, make_user
from tests.router_double import DEFAULT_BE_KEY, MASTER_SERVER_BE, RunningRouter


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, router: RunningRouter) -> TestClient:
    """Overrides conftest's: this app runs its router session against the double."""
    return await backend_on_router(aiohttp_client, settings, router)


@pytest.fixture
async def agents() -> AsyncIterator[list[RunningAgent]]:
    """Agents started by a test; stopped afterwards whatever happened."""
    started: list[RunningAgent] = []
    yield started
    for agent in started:
        await agent.stop()


async def start_agent(agents: list[RunningAgent], url: str, token: str, name: str, description: str = "Echoes text",
                      **kwargs: Any) -> RunningAgent:
    agent = await run_agent(url, token, name, description, **kwargs)
    agents.append(agent)
    return agent


async def test_agent_is_active_within_100ms_of_connecting_and_inactive_after(
        client: TestClient, router: RunningRouter, user: User, db, agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "echo agent", "registered description")
    started = time.perf_counter()
    agent = await start_agent(agents, router.url, row["jwt"], "echo agent", wait=False)
    await agent.wait_connected()
    connected = time.perf_counter()
    await wait_for(lambda: is_active(db, row["id"]))
    active = time.perf_counter()
    measure("connect-start->active", active - started)
    measure("register-sent->active", active - connected)
    assert active - started < 0.1
    resp = await client.get("/api/agents/", headers=user.headers)
    [item] = await resp.json()
    assert item["is_active"] is True and item["agent_name"] == "echo_agent"
    assert item["agent_description"] == "Echoes text"
    assert item["agent_schema"] == {"type": "function", "function": {
        "name": "echo_agent", "description": "Echoes text",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}
    assert item["agent_alias"] == row["alias"]  # same name: the alias (tool name) is kept
    resp = await client.get("/api/agents/active", params={"agent_type": "all"}, headers=user.headers)
    [entry] = (await resp.json())["active_connections"]
    assert entry["id"] == row["id"] and entry["agent_schema"]["function"]["name"] == row["alias"]
    stopped = time.perf_counter()
    await agent.stop()
    await wait_for(lambda: _is(is_active(db, row["id"]), False))
    measure("disconnect->inactive", time.perf_counter() - stopped)


async def _is(value: Any, expected: Any) -> bool:
    return (await value) is expected


@pytest.mark.parametrize("case", ["forged", "deleted", "other_owner", "unknown"])
async def test_agent_with_bad_token_is_told_to_go_away(client: TestClient, router: RunningRouter, user: User,
                                                       other_user: User, db, agents: list[RunningAgent],
                                                       case: str) -> None:
    row = await register_agent(client, user, "victim", "d")
    secret = client.app[SETTINGS].secret_key
    agent_id = uuid.UUID(row["id"])
    token = {
        "forged": issue_agent_token(agent_id, uuid.UUID(user.id), "forged-with-another-key-0123456789abcdef"),
        "deleted": row["jwt"],
        "other_owner": issue_agent_token(agent_id, uuid.UUID(other_user.id), secret),
        "unknown": issue_agent_token(uuid.uuid4(), uuid.UUID(user.id), secret),
    }[case]
    if case == "deleted":
        resp = await client.delete(f"/api/agents/{row['id']}", headers=user.headers)
        assert resp.status == 204
    agent = await start_agent(agents, router.url, token, "victim")
    await agent.wait_done()
    assert agent.exit_error == NOT_REGISTERED
    assert not await db.fetchval("SELECT count(*) FROM agents WHERE is_active")


async def test_agent_with_long_name_is_told_why(client: TestClient, router: RunningRouter, user: User, db,
                                                agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "short", "d")
    agent = await start_agent(agents, router.url, row["jwt"], "n" * 56)
    await agent.wait_done()
    assert agent.exit_error == NAME_TOO_LONG
    assert await is_active(db, row["id"]) is False
    assert await db.fetchval("SELECT name FROM agents") == "short"


async def test_agent_announcing_new_name_gets_alias_from_normalised_name(
        client: TestClient, router: RunningRouter, user: User, db, agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "first", "d")
    agent = await start_agent(agents, router.url, row["jwt"], "Other Name")
    await wait_for(lambda: is_active(db, row["id"]))
    stored = await db.fetchrow("SELECT name, alias FROM agents")
    assert stored["name"] == "other_name" and stored["alias"].startswith("other_name_")  # D23
    assert len(stored["alias"]) == len("other_name_") + 6
    await agent.stop()
    await wait_for(lambda: _is(is_active(db, row["id"]), False))
    await start_agent(agents, router.url, row["jwt"], "Other Name")
    await wait_for(lambda: is_active(db, row["id"]))
    assert await db.fetchval("SELECT alias FROM agents") == stored["alias"]


async def test_unregister_of_non_agent_ids_is_silent(client: TestClient, router: RunningRouter, user: User, db,
                                                     agents: list[RunningAgent]) -> None:
    master = await run_master_agent(router.url)
    agents.append(master)
    stranger = await RawClient.connect(router.url, {"x-custom-invoke-key": "some-key:master_server_ml"})
    await stranger.send({"message_type": "agent_log", "log_message": "x"})
    await stranger.close()
    await master.stop()
    double = router.double
    await double.wait_until(lambda: len([f for f in double.frames_to(MASTER_SERVER_BE)
                                         if f["request_payload"]["message_type"] == "agent_unregister"]) >= 2)
    await asyncio.sleep(0.2)
    # No notices: the back-end opened no connection (D24).
    assert not [cid for cid, _ in double.received if cid.startswith(DEFAULT_BE_KEY + ":")]
    assert client.app[ROUTER].connected.is_set()


async def test_agent_log_reaches_only_its_owner(client: TestClient, router: RunningRouter, user: User,
                                                other_user: User, agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "logger", "d")

    async def handler(agent_context: GenAIContext, text: str) -> str:
        """Logs, then echoes."""
        agent_context.logger.info(f"hello log: {text}")
        return text

    await start_agent(agents, router.url, row["jwt"], "logger", handler=handler)
    socket_of_owner, socket_of_other = FakeSocket(), FakeSocket()
    client.app[SOCKETS].add(uuid.UUID(user.id), socket_of_owner)  # type: ignore[arg-type]
    client.app[SOCKETS].add(uuid.UUID(other_user.id), socket_of_other)  # type: ignore[arg-type]
    request_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    answer = await invoke(router.url, "test-invoker", row["id"], {"text": "hi"}, request_id, session_id)
    assert answer.is_success and answer.response == "hi"

    async def owner_sees_it() -> bool:
        resp = await client.get("/api/logs/list", params={"request_id": request_id}, headers=user.headers)
        return "hello log: hi" in [e["message"] for e in await resp.json()]

    await wait_for(owner_sees_it)
    resp = await client.get("/api/logs/list", params={"session_id": session_id}, headers=other_user.headers)
    assert await resp.json() == []

    async def pushed() -> bool:
        return any(f["log"]["message"] == "hello log: hi" for f in socket_of_owner.frames)

    await wait_for(pushed)
    assert socket_of_other.frames == []


async def test_malformed_frames_are_skipped_and_session_survives(
        client: TestClient, router: RunningRouter, user: User, db, agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "tough", "d")
    raw = await RawClient.connect(router.url, {"x-custom-authorization": row["jwt"]})
    try:
        await raw.send({"message_type": "agent_register", "request_payload": {"agent_name": 5}})
        await raw.send({"message_type": "agent_register", "request_payload": {"agent_input_schema": "[1]"}})
        await raw.send({"message_type": "agent_register",
                        "request_payload": {"agent_input_schema": {"x": "y" * 1_100_000}}})
        await raw.send({"message_type": "agent_log", "log_message": {"a": 1}, "log_level": "info",
                        "request_id": "nope", "session_id": str(uuid.uuid4())})
        await raw.send({"message_type": "agent_log", "log_message": "ok", "log_level": ["info"],
                        "request_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4())})
        double = router.double
        await double.wait_until(lambda: len(double.frames_to(MASTER_SERVER_BE)) >= 5)
    finally:
        await raw.close()
    recorder = RecordingBus(client.app)
    for text in ("not json", "[]", "null", '{"error": {"error_message": "x"}}', '{"request_payload": "x"}',
                 '{"request_payload": {"message_type": "nope"}}', '{"request_payload": {"message_type": 5}}',
                 '{"request_payload": {"message_type": "agent_register"}}',
                 '{"request_payload": {"message_type": "agent_unregister", "agent_uuid": ""}}'):
        await dispatch(recorder.bus, text)
    assert recorder.notices == []
    assert await db.fetchval("SELECT count(*) FROM logs") == 0
    assert await db.fetchval("SELECT name FROM agents") == "tough"
    # The session still works.
    await start_agent(agents, router.url, row["jwt"], "tough")
    await wait_for(lambda: is_active(db, row["id"]))


async def test_router_restart_backend_reconnects_and_sees_agents_again(
        client: TestClient, router: RunningRouter, user: User, db, agents: list[RunningAgent]) -> None:
    row = await register_agent(client, user, "phoenix", "d")
    first = await start_agent(agents, router.url, row["jwt"], "phoenix")
    await wait_for(lambda: is_active(db, row["id"]))
    await router.stop()
    ready = await (await client.get("/ready")).json()
    assert ready["status"] == "ready" and ready["router"]["state"] in ("disconnected", "connecting")
    await first.stop()  # the library never notices a dead router (agent-bus.md §7): restart it
    await asyncio.sleep(0.3)
    restarted = time.perf_counter()
    await router.start()
    await router.double.wait_for_client(MASTER_SERVER_BE)
    measure("router-restart->backend-reconnected (test backoff 0.05-0.5 s)", time.perf_counter() - restarted)
    # The restarted router knows no one, and replays nothing: every agent is inactive again.
    await wait_for(lambda: _is(is_active(db, row["id"]), False))
    started = time.perf_counter()
    await start_agent(agents, router.url, row["jwt"], "phoenix")
    await wait_for(lambda: is_active(db, row["id"]))
    measure("after-restart connect-start->active", time.perf_counter() - started)
    ready = await (await client.get("/ready")).json()
    assert ready["router"] == {"state": "connected", "error": ready["router"]["error"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_backend_serves_rest_while_router_absent(settings: Settings, aiohttp_client: Any, password_hash: str,
                                                       db, agents: list[RunningAgent]) -> None:
    # Not the module's `client`: that one would lead (one router session per database).
    port = _free_port()
    app = create_app(replace(settings, start_router=True, router_ws_url=f"ws://127.0.0.1:{port}/ws"))
    client = await aiohttp_client(app)
    user = await make_user(client, password_hash)
    row = await register_agent(client, user, "patient", "d")

    async def serving_without_router() -> bool:
        ready = await (await client.get("/ready")).json()
        return bool(ready["status"] == "ready" and ready["router"]["state"] != "connected" and ready["router"]["error"])

    # Once elected (after the takeover grace) it tries the router, fails, and keeps serving.
    await wait_for(serving_without_router, interval=0.05)
    async with RunningRouter(port=port) as router:
        came_up = time.perf_counter()
        await router.double.wait_for_client(MASTER_SERVER_BE)
        measure("router-appears->backend-connected (test backoff)", time.perf_counter() - came_up)
        await start_agent(agents, router.url, row["jwt"], "patient")
        await wait_for(lambda: is_active(db, row["id"]))
        for agent in agents:
            await agent.stop()
        agents.clear()
        await client.close()


async def test_ready_reports_router_disabled(settings: Settings, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    assert (await (await client.get("/ready")).json())["router"] == {"state": "disabled", "error": None}


async def test_reconnect_with_default_backoff(settings: Settings, router: RunningRouter, aiohttp_client: Any) -> None:
    defaults = Settings(secret_key="x")
    app = create_app(replace(settings, start_router=True, router_ws_url=router.url,
                             router_backoff_initial=defaults.router_backoff_initial,
                             router_backoff_max=defaults.router_backoff_max))
    await aiohttp_client(app)
    await router.double.wait_for_client(MASTER_SERVER_BE)
    await router.restart(pause=0.3)
    restarted = time.perf_counter()
    await router.double.wait_for_client(MASTER_SERVER_BE, timeout=10)
    took = time.perf_counter() - restarted
    measure("router-restart(0.3 s down)->backend-reconnected (default backoff 1-30 s)", took + 0.3)
    assert took < 2.0


async def test_register_frame_on_the_wire_matches_the_library(client: TestClient, router: RunningRouter) -> None:
    await router.double.wait_until(lambda: any(c == MASTER_SERVER_BE for c, _ in router.double.received))
    [text] = [t for c, t in router.double.received if c == MASTER_SERVER_BE]
    frame = json.loads(text)
    assert frame["message_type"] == "agent_register" and set(frame["request_payload"]) == {
        "agent_name", "agent_description", "agent_input_schema"}

