"""Helpers for tests that need agents: REST factories, MCP/A2A row factories, DB waits, a back-end on a router double.

Used by test_agents, test_flows, test_logs, test_bus (and the chat and tools issues).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.bus.handlers import Bus
from genai_backend.config import SETTINGS, Settings
from genai_backend.db import POOL
from genai_backend.sockets import SOCKETS
from tests.conftest import User
from tests.router_double import MASTER_SERVER_BE, RunningRouter


def measure(what: str, seconds: float) -> None:
    print(f"MEASURE {what} {seconds * 1000:.1f} ms")


async def backend_on_router(aiohttp_client: Any, settings: Settings, router: RunningRouter,
                            **changes: Any) -> TestClient:
    """The back-end with its bus session connected to the router double."""
    app = create_app(replace(settings, start_router=True, router_ws_url=router.url, **changes))
    client: TestClient = await aiohttp_client(app)
    await router.double.wait_for_client(MASTER_SERVER_BE)
    return client


ECHO_SCHEMA = {"type": "function", "function": {"name": "x", "description": "Echo",
                                                "parameters": {"type": "object", "properties": {}, "required": []}}}


async def register_agent(client: TestClient, user: User, name: str = "my agent", description: str = "does things",
                         input_parameters: Any = None, **extra: Any) -> dict[str, Any]:
    """POST /api/agents/register; returns the response body (with `jwt`)."""
    body = {"name": name, "description": description,
            "input_parameters": {} if input_parameters is None else input_parameters, **extra}
    resp = await client.post("/api/agents/register", json=body, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def set_active(db: asyncpg.Connection, agent_id: str, active: bool = True) -> None:
    """Flip an agent's flag directly, as a connect/disconnect would (the bus tests do it for real)."""
    await db.execute("UPDATE agents SET is_active = $2 WHERE id = $1", uuid.UUID(agent_id), active)


async def active_agent(client: TestClient, db: asyncpg.Connection, user: User, name: str = "agent",
                       description: str = "desc", input_parameters: Any = None) -> dict[str, Any]:
    agent = await register_agent(client, user, name, description, input_parameters)
    await set_active(db, agent["id"])
    return agent


async def insert_mcp_server(db: asyncpg.Connection, user: User, url: str = "http://127.0.0.1:8988/mcp",
                            tools: list[dict[str, Any]] | None = None, active: bool = True) -> dict[str, Any]:
    """An MCP server row with tools (tool dicts: name, description, inputSchema, alias); one transaction,
    so server and tools share `now()` like the real registration."""
    server_id = uuid.uuid4()
    tool_rows = []
    async with db.transaction():
        server = await db.fetchrow(
            "INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES ($1, $2, $3, $4) "
            "RETURNING id, server_url, created_at, updated_at", server_id, url, uuid.UUID(user.id), active)
        for tool in tools or []:
            row = await db.fetchrow(
                'INSERT INTO mcptools (id, name, description, "inputSchema", annotations, alias, mcp_server_id) '
                "VALUES ($1, $2, $3, $4::json, NULL, $5, $6) RETURNING id, name, description, alias",
                uuid.uuid4(), tool["name"], tool.get("description"), json.dumps(tool.get("inputSchema", {})),
                tool.get("alias", f"{tool['name']}_abcdef"), server_id)
            tool_rows.append(dict(row))
    return {**dict(server), "tools": tool_rows}


async def insert_a2a_card(db: asyncpg.Connection, user: User, url: str = "http://127.0.0.1:10102",
                          name: str = "Card_Agent", alias: str = "card_agent_qwerty",
                          description: str | None = "Card desc",
                          skills: list[dict[str, Any]] | None = None, active: bool = True) -> dict[str, Any]:
    content = {"skills": skills if skills is not None else [{"id": "s1", "name": "s1", "description": "Skill one"}],
               "version": "1.0"}
    row = await db.fetchrow(
        "INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active, creator_id) "
        "VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8) RETURNING id, name, alias, created_at, updated_at",
        uuid.uuid4(), name, alias, description, url, json.dumps(content), active, uuid.UUID(user.id))
    return dict(row)


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.002) -> float:
    """Poll an async predicate; returns the seconds it took. Raises TimeoutError."""
    start = time.perf_counter()
    deadline = start + timeout
    while True:
        if await predicate():
            return time.perf_counter() - start
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)


async def is_active(db: asyncpg.Connection, agent_id: str) -> bool | None:
    value: bool | None = await db.fetchval("SELECT is_active FROM agents WHERE id = $1", uuid.UUID(agent_id))
    return value


class FakeSocket:
    """Stands in for a front-end WebSocketResponse in the SocketRegistry (records frames)."""

    def __init__(self) -> None:
        self.closed = False
        self.frames: list[Any] = []

    async def send_str(self, data: str) -> None:
        self.frames.append(json.loads(data))

    async def close(self, **_: Any) -> None:
        self.closed = True


@dataclass
class RecordingBus:
    """A `Bus` for calling handlers directly; records notices and runs spawned work at once."""

    app: web.Application
    notices: list[tuple[str, str]] = field(default_factory=list)
    spawned: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def bus(self) -> Bus:
        return Bus(pool=self.app[POOL], settings=self.app[SETTINGS], sockets=self.app[SOCKETS],
                   notify=lambda agent, message: self.notices.append((agent, message)), spawn=self._spawn)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.spawned.append(asyncio.ensure_future(coro))

    async def settle(self) -> None:
        if self.spawned:
            await asyncio.gather(*self.spawned)

