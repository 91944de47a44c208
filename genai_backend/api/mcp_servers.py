"""MCP servers: register by URL (tools discovered and stored), list, read, delete (rest-api #31-#34)."""
from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth.middleware import MANAGE, READ, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.discovery.client import DISCOVERY, refusal_detail
from genai_backend.discovery.guard import UrlRefused
from genai_backend.discovery.mcp import McpTool, McpUnavailable, tool_schema
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
    tool_rows,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path, query

log = logging.getLogger(__name__)

UNREACHABLE = ("Could not access MCP server on: {url}. Make sure your MCP server supports 'streamable-http' "
               "protocol and is remotely accesible.")


async def with_tools(conn: asyncpg.Connection | asyncpg.Pool, servers: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Server rows as #32 shows them: each with its `mcp_tools`."""
    tools: dict[uuid.UUID, list[dict[str, Any]]] = {server["id"]: [] for server in servers}
    async for tool in queries.list_mcp_tools_by_servers(conn, server_ids=list(tools)):
        tools[tool["mcp_server_id"]].append(dict(tool))
    return [{**server, "mcp_tools": tools[server["id"]]} for server in servers]


async def store_server(conn: asyncpg.Connection, url: str, creator_id: uuid.UUID,
                       tools: list[McpTool]) -> tuple[uuid.UUID, bool]:
    """Insert the server with its tools, or re-activate the caller's existing one (its tools untouched).

    Returns the server id and whether an inactive server was re-activated.
    """
    server_id = await queries.create_mcp_server(conn, server_id=uuid.uuid4(), server_url=url, creator_id=creator_id)
    if server_id is not None:
        await queries.sync_mcp_tools(conn, server_id=server_id, tools=tool_rows(tools))
        return server_id, False
    existing = await queries.activate_mcp_server_by_url(conn, creator_id=creator_id, server_url=url)
    if existing is None:  # deleted between the conflict and this read: try once more as new
        return await store_server(conn, url, creator_id, tools)
    return existing["id"], existing["reactivated"]


class McpServersView(web.View):
    URL_PATH = "/api/mcp/servers"

    @docs(tags=["mcp"], summary="Register an MCP server: its tools are listed and stored")
    @auth(USER, scope=MANAGE)
    @body(McpServerCreateSchema)
    @response_schema(McpServerRegisteredSchema, 200)
    @response_schema(DetailSchema, 400, description="Unreachable, not MCP, or refused by the URL policy")
    async def post(self) -> web.Response:
        url = self.request["body"]["server_url"]
        discovery = self.request.app[DISCOVERY]
        try:
            await discovery.vet(url)
            tools = await discovery.tools(url)
        except (UrlRefused, McpUnavailable) as exc:
            # The reference's answer text does not say why; the service's log does.
            log.info("MCP registration of %s failed: %s", url, exc)
            raise BadRequestError(refusal_detail(url, exc) or UNREACHABLE.format(url=url)) from None
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        # One transaction: the tools' timestamps equal the server's (rest-api #31).
        async with pool.acquire() as conn, conn.transaction():
            server_id, reactivated = await store_server(conn, url, creator_id, tools)
            server = await queries.get_mcp_server(conn, server_id=server_id, creator_id=creator_id)
            stored = [tool async for tool in queries.list_mcp_tools_by_servers(conn, server_ids=[server_id])]
        if reactivated:
            await reevaluate_flows(pool, creator_id)
        return json_response({
            "server_url": server["server_url"],
            "mcp_tools": [tool_schema(t["description"], t["inputSchema"], t["alias"]) for t in stored],
            "is_active": server["is_active"], "created_at": server["created_at"], "updated_at": server["updated_at"]})

    @docs(tags=["mcp"], summary="Your active MCP servers with their tools, oldest first")
    @auth(USER, scope=READ)
    @query(McpServerListQuerySchema)
    @response_schema(McpServerSchema(many=True), 200)
    async def get(self) -> web.Response:
        q = self.request["query"]
        pool = self.request.app[POOL]
        servers = [server async for server in queries.list_mcp_servers(
            pool, creator_id=self.request[USER_ID], offset=clamp(q["offset"]), limit=clamp(q["limit"]))]
        return json_response(await with_tools(pool, servers))


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
