"""MCP servers: register by URL (tools discovered and stored), list, read, delete (rest-api #31-#34)."""
from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import ANSWERS, Answer, Items, respond
from genai_backend.auth import secrets
from genai_backend.auth.middleware import MANAGE, READ, USER, USER_ID, auth
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.discovery.client import DISCOVERY, refusal_detail
from genai_backend.discovery.guard import UrlRefused
from genai_backend.discovery.mcp import AUTH_STATUSES, McpTool, McpUnauthorized, McpUnavailable, tool_schema
from genai_backend.errors import BadRequestError
from genai_backend.flows_state import reevaluate_flows
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.agents import clamp
from genai_backend.schemas.mcp_servers import (
    McpServerCreateSchema,
    McpServerListQuerySchema,
    McpServerPathSchema,
    McpServerRegisteredSchema,
    McpServerSchema,
    McpServerUpdateSchema,
    masked_headers,
    open_headers,
    tool_rows,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path, query

log = logging.getLogger(__name__)

UNREACHABLE = ("Could not access MCP server on: {url}. Make sure your MCP server supports 'streamable-http' "
               "protocol and is remotely accesible.")
UNAUTHORIZED = ("MCP server on: {url} answered {status}: it needs credentials; give them as request headers in "
                "'headers', e.g. {{\"Authorization\": \"Bearer <token>\"}}")
FORBIDDEN = "MCP server on: {url} answered {status}: the credentials given in 'headers' are refused or insufficient"


def extras(names: Any, reason: str | None = None) -> dict[str, Any]:
    """What responses add to the reference's keys: `headers` (names, values masked) and
    `unavailable_reason`, each only when there is one, so other servers look as they always did."""
    shown: dict[str, Any] = {}
    if names:
        shown["headers"] = masked_headers(names)
    if reason is not None:
        shown["unavailable_reason"] = reason
    return shown


async def discover(request: web.Request, url: str, headers: dict[str, str] | None) -> list[McpTool]:
    """The server's tools, or the 400 that says why not (a 401/403 says so)."""
    discovery = request.app[DISCOVERY]
    try:
        await discovery.vet(url)
        return await discovery.tools(url, headers=headers)
    except McpUnauthorized as exc:
        log.info("MCP server %s refused the credentials: %s", url, exc)
        text = UNAUTHORIZED if exc.status == 401 and not headers else FORBIDDEN
        raise BadRequestError(text.format(url=url, status=AUTH_STATUSES[exc.status])) from None
    except (UrlRefused, McpUnavailable) as exc:
        # The reference's answer text does not say why; the service's log does.
        log.info("MCP registration of %s failed: %s", url, exc)
        raise BadRequestError(refusal_detail(url, exc) or UNREACHABLE.format(url=url)) from None


async def seal(request: web.Request, headers: dict[str, str] | None) -> dict[str, Any]:
    """The stored form of `headers`: ciphertext, names and key fingerprint (all null for none)."""
    if not headers:
        return {"headers": None, "header_names": None, "secret_key_id": None}
    key = request.app[SETTINGS].secret_key
    sealed = await secrets.encrypt(orjson.dumps(headers).decode(), key)
    return {"headers": sealed, "header_names": list(headers), "secret_key_id": secrets.key_id(key)}


async def with_tools(conn: asyncpg.Connection | asyncpg.Pool, servers: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Server rows as #32 shows them: each with its `mcp_tools`."""
    tools: dict[uuid.UUID, list[dict[str, Any]]] = {server["id"]: [] for server in servers}
    async for tool in queries.list_mcp_tools_by_servers(conn, server_ids=list(tools)):
        tools[tool["mcp_server_id"]].append(dict(tool))
    return [{**row, "mcp_tools": tools[row["id"]], **extras(names, reason)}
            for row, names, reason in ((_core(server), server["header_names"], server["unavailable_reason"])
                                       for server in servers)]


def _core(server: asyncpg.Record) -> dict[str, Any]:
    return {key: value for key, value in server.items() if key not in ("header_names", "unavailable_reason")}


async def store_server(conn: asyncpg.Connection, url: str, creator_id: uuid.UUID,
                       tools: list[McpTool], sealed: dict[str, Any] | None = None) -> tuple[uuid.UUID, bool]:
    """Insert the server with its tools, or re-activate the caller's existing one (its tools untouched).

    `sealed` (from `seal`) replaces the stored headers; None keeps an existing server's.
    Returns the server id and whether an inactive server was re-activated.
    """
    stored = sealed or {"headers": None, "header_names": None, "secret_key_id": None}
    server_id = await queries.create_mcp_server(conn, server_id=uuid.uuid4(), server_url=url, creator_id=creator_id,
                                                **stored)
    if server_id is not None:
        await queries.sync_mcp_tools(conn, server_id=server_id, tools=tool_rows(tools))
        return server_id, False
    existing = await queries.activate_mcp_server_by_url(conn, creator_id=creator_id, server_url=url)
    if existing is None:  # deleted between the conflict and this read: try once more as new
        return await store_server(conn, url, creator_id, tools, sealed)
    if sealed is not None:
        await queries.set_mcp_server_headers(conn, server_id=existing["id"], **sealed)
    return existing["id"], existing["reactivated"]


class McpServersView(web.View):
    URL_PATH = "/api/mcp/servers"

    @docs(tags=["mcp"], summary="Register an MCP server: its tools are listed and stored")
    @auth(USER, scope=MANAGE)
    @body(McpServerCreateSchema)
    @response_schema(McpServerRegisteredSchema, 200)
    @response_schema(DetailSchema, 400, description="Unreachable, not MCP, or refused by the URL policy")
    async def post(self) -> web.Response:
        data = self.request["body"]
        url, headers = data["server_url"], data.get("headers")
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        if headers is None:
            # Registering a known server again: it is looked up with the headers stored for it.
            stored = await queries.get_mcp_server_headers_by_url(pool, creator_id=creator_id, server_url=url)
            try:
                lookup = await open_headers(stored, self.request.app[SETTINGS].secret_keys)
            except secrets.InvalidCiphertext:
                lookup = None  # unreadable (a lost key): as if none were stored; new ones can be given
        else:
            lookup = headers
        tools = await discover(self.request, url, lookup or None)
        sealed = None if headers is None else await seal(self.request, headers)
        # One transaction: the tools' timestamps equal the server's (rest-api #31).
        async with pool.acquire() as conn, conn.transaction():
            server_id, reactivated = await store_server(conn, url, creator_id, tools, sealed)
            server = await queries.get_mcp_server(conn, server_id=server_id, creator_id=creator_id)
            stored = [tool async for tool in queries.list_mcp_tools_by_servers(conn, server_ids=[server_id])]
        if reactivated:
            await reevaluate_flows(pool, creator_id)
        return json_response({
            "server_url": server["server_url"],
            "mcp_tools": [tool_schema(t["description"], t["inputSchema"], t["alias"]) for t in stored],
            "is_active": server["is_active"], "created_at": server["created_at"], "updated_at": server["updated_at"],
            **extras(server["header_names"])})

    @docs(tags=["mcp"], summary="Your active MCP servers with their tools, oldest first")
    @auth(USER, scope=READ)
    @query(McpServerListQuerySchema)
    @response_schema(McpServerSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        pool = self.request.app[POOL]

        async def attempt(items: Items) -> Answer:
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                async for servers in items.batches(conn, queries.list_mcp_servers, creator_id=self.request[USER_ID],
                                                   offset=clamp(q["offset"]), limit=clamp(q["limit"])):
                    items.add(await with_tools(conn, servers))
            return items.array()

        return await respond(self.request, await self.request.app[ANSWERS].build(attempt, self.request[USER_ID]))


class McpServerView(web.View):
    URL_PATH = "/api/mcp/servers/{server_id}"

    @docs(tags=["mcp"], summary="One of your MCP servers (active or not) with its tools")
    @auth(USER, scope=READ)
    @path(McpServerPathSchema)
    @response_schema(McpServerSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        server_id = self.request["path"]["server_id"]
        pool = self.request.app[POOL]
        server = await queries.get_mcp_server(pool, server_id=server_id, creator_id=self.request[USER_ID])
        if server is None:
            raise BadRequestError(f"MCP server with id: {server_id} was not found")
        [found] = await with_tools(pool, [server])
        return json_response(found)

    @docs(tags=["mcp"], summary="Replace the request headers (credentials) of one of your MCP servers")
    @auth(USER, scope=MANAGE)
    @path(McpServerPathSchema)
    @body(McpServerUpdateSchema)
    @response_schema(McpServerSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found, or the server refuses the headers")
    async def patch(self) -> web.Response:
        server_id = self.request["path"]["server_id"]
        headers = self.request["body"]["headers"] or None
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        server = await queries.get_mcp_server(pool, server_id=server_id, creator_id=creator_id)
        if server is None:
            raise BadRequestError(f"MCP server with id: {server_id} was not found")
        tools = await discover(self.request, server["server_url"], headers)
        sealed = await seal(self.request, headers)
        async with pool.acquire() as conn, conn.transaction():
            locked = await queries.get_mcp_server_for_update(conn, server_id=server_id, creator_id=creator_id)
            if locked is None:
                raise BadRequestError(f"MCP server with id: {server_id} was not found")
            await queries.set_mcp_server_headers(conn, server_id=server_id, **sealed)
            await queries.sync_mcp_tools(conn, server_id=server_id, tools=tool_rows(tools))
            [found] = await with_tools(conn, [await queries.get_mcp_server(conn, server_id=server_id,
                                                                           creator_id=creator_id)])
        if not locked["is_active"]:
            await reevaluate_flows(pool, creator_id)
        return json_response(found)

    @docs(tags=["mcp"], summary="Delete one of your MCP servers and its tools")
    @auth(USER, scope=MANAGE)
    @path(McpServerPathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        server_id = self.request["path"]["server_id"]
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        if await queries.delete_mcp_server(pool, server_id=server_id, creator_id=creator_id) is None:
            raise BadRequestError(f"MCP server with ID {server_id} was not found")
        # Flows naming the deleted tools are no longer valid.
        await reevaluate_flows(pool, creator_id)
        return no_content()


VIEWS = (McpServersView, McpServerView)
