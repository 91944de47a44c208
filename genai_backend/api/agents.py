"""Genai agents: registration, listings, the active catalogue, edit and delete (rest-api #6-#11)."""
from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import Answer, Items, respond
from genai_backend.auth.middleware import DUAL, MANAGE, READ, USER, USER_ID, USER_OR_AGENT, auth
from genai_backend.auth.tokens import issue_agent_token
from genai_backend.catalogues import CATALOGUES
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.discovery.a2a import a2a_properties, a2a_schema
from genai_backend.discovery.mcp import tool_schema
from genai_backend.discovery.urls import UrlError, normalise_url
from genai_backend.errors import BadRequestError, ServerError
from genai_backend.flows_state import reevaluate_flows
from genai_backend.naming import normalise_name, with_unique_alias
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.agents import (
    ActiveListSchema,
    ActiveQuerySchema,
    AgentCreateSchema,
    AgentItemSchema,
    AgentListQuerySchema,
    AgentPathSchema,
    AgentRegisteredSchema,
    AgentUpdateSchema,
    FrontendQuerySchema,
    clamp,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path, query

UNEXPECTED = "Unexpected error occured, try again later."


def like_escape(text: str) -> str:
    """A literal substring for ILIKE (D34): the reference lets `%` and `_` act as wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _renamed(schema: Any, name: str, description: str | None = None, only_truthy: bool = False) -> Any:
    """A copy of an agent schema whose `function.name` (and description) are replaced."""
    if not (isinstance(schema, dict) and isinstance(schema.get("function"), dict)):
        return schema
    function = dict(schema["function"])
    if function.get("name") or not only_truthy:
        function["name"] = name
    if description is not None and function.get("description"):
        function["description"] = description
    return {**schema, "function": function}


def _active_schema(row: asyncpg.Record) -> Any:
    kind, schema = row["type"], row["schema"]
    if kind == "genai":
        return _renamed(schema, row["name"])
    if kind == "mcp":
        return tool_schema(row["description"], schema if isinstance(schema, dict) else {}, row["title"])
    if kind == "a2a":
        skills = row["skills"] if isinstance(row["skills"], list) else []
        return a2a_schema(row["title"] or "", row["description"], [s for s in skills if isinstance(s, dict)])
    # A flow, from its first element.
    first, title, description = row["first_type"], row["title"], row["description"]
    if first == "genai":
        return _renamed(schema, title, description, only_truthy=True)
    if first == "mcp":
        return {**tool_schema(None, schema if isinstance(schema, dict) else {}, title), "description": description}
    if first == "a2a":
        return {"title": title, "description": description, "properties": a2a_properties(),
                "required": ["task", "text"], "type": "object"}
    return None


def _url(raw: str) -> str:
    # As the reference prints pydantic's AnyHttpUrl: `http://host:port` gains its `/`.
    try:
        return normalise_url(raw)
    except UrlError:
        return raw


def active_item(row: asyncpg.Record) -> dict[str, Any]:
    """An ActiveItem (rest-api #8); keys whose value is null are omitted."""
    item: dict[str, Any] = {"id": row["id"]}
    if row["name"] is not None:
        item["name"] = row["name"]
    item["type"] = row["type"]
    if row["url"] is not None:
        item["url"] = _url(row["url"])
    schema = _active_schema(row)
    if schema is not None:
        item["agent_schema"] = schema
    if row["flow"] is not None:
        item["flow"] = row["flow"]
    item["created_at"], item["updated_at"] = row["created_at"], row["updated_at"]
    if row["is_active"] is not None:
        item["is_active"] = row["is_active"]
    return item


class RegisterAgentView(web.View):
    URL_PATH = "/api/agents/register"

    @docs(tags=["agents"], summary="Register an agent and get its JWT")
    @auth(USER, scope=MANAGE)
    @body(AgentCreateSchema)
    @response_schema(AgentRegisteredSchema, 200)
    @response_schema(DetailSchema, 400, description="Id taken, or not a uuid")
    async def post(self) -> web.Response:
        data = self.request["body"]
        creator_id = self.request[USER_ID]
        agent_id: uuid.UUID = data.get("id") or uuid.uuid4()
        name = normalise_name(data["name"])
        jwt = issue_agent_token(agent_id, creator_id, self.request.app[SETTINGS].secret_key)
        pool = self.request.app[POOL]

        async def insert(alias: str) -> asyncpg.Record:
            return await queries.create_agent(
                pool, agent_id=agent_id, name=name, description=data["description"],
                input_parameters=data["input_parameters"], alias=alias, jwt=jwt, creator_id=creator_id)

        try:
            row = await with_unique_alias(name, insert, "agents_alias_key")
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name in ("agents_pkey", "agents_jwt_key"):
                raise BadRequestError(f"Agent with {agent_id} already exists") from None
            raise ServerError(UNEXPECTED) from None
        except asyncpg.PostgresError:
            raise ServerError(UNEXPECTED) from None
        return json_response(dict(row))


class AgentsView(web.View):
    URL_PATH = "/api/agents/"

    @docs(tags=["agents"], summary="List your agents")
    @auth(USER_OR_AGENT, scope=READ)
    @query(AgentListQuerySchema)
    @response_schema(AgentItemSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        creator_id = self.request[USER_ID]
        offset, limit = clamp(q["offset"]), clamp(q["limit"])
        if "name" in q:
            listing, match = queries.list_agents_by_name, {"name": q["name"]}
        elif "description" in q:
            listing, match = queries.list_agents_by_description, {"pattern": like_escape(q["description"])}
        else:
            listing, match = queries.list_agents, {}

        async def build(conn: asyncpg.Connection, items: Items) -> Answer:
            await items.fetch(conn, listing, creator_id=creator_id, offset=offset, limit=limit, **match)
            return items.array()

        # The parameter's name tells the listings apart: `name` and `pattern` never share a key.
        variant = ("agents", *match.items(), offset, limit)
        body = await self.request.app[CATALOGUES].answer(self.request.app[POOL], creator_id, variant, build)
        return await respond(self.request, body)


class ActiveAgentsView(web.View):
    URL_PATH = "/api/agents/active"

    @docs(tags=["agents"], summary="Everything the master agent may call: flows, agents, MCP tools, A2A cards")
    @auth(DUAL, scope=READ)
    @query(ActiveQuerySchema)
    @response_schema(ActiveListSchema, 200)
    @response_schema(DetailSchema, 400, description="Credential mix-up (README §3)")
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        creator_id = self.request[USER_ID]
        agent_type, offset, limit = q["agent_type"], clamp(q["offset"]), clamp(q["limit"])

        async def build(conn: asyncpg.Connection, items: Items) -> Answer:
            await items.fetch(conn, queries.list_active_connections, active_item,
                              creator_id=creator_id, agent_type=agent_type, offset=offset, limit=limit)
            return items.array({"count_active_connections": items.count}, "active_connections")

        body = await self.request.app[CATALOGUES].answer(
            self.request.app[POOL], creator_id, ("active", agent_type, offset, limit), build)
        return await respond(self.request, body)


class FrontendAgentsView(web.View):
    URL_PATH = "/api/agents/frontend"

    @docs(tags=["agents"], summary="All your agents as one array, for genai-protocol 2.0's get_agents()")
    @auth(USER_OR_AGENT, scope=READ)
    @query(FrontendQuerySchema)
    @response_schema(AgentItemSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        is_active = self.request["query"].get("is_active")
        creator_id = self.request[USER_ID]

        async def build(conn: asyncpg.Connection, items: Items) -> Answer:
            await items.fetch(conn, queries.list_agents_frontend, creator_id=creator_id, is_active=is_active)
            return items.array()

        body = await self.request.app[CATALOGUES].answer(
            self.request.app[POOL], creator_id, ("frontend", is_active), build)
        return await respond(self.request, body)


class AgentView(web.View):
    URL_PATH = "/api/agents/{agent_id}"

    @docs(tags=["agents"], summary="Read one of your agents")
    @auth(USER_OR_AGENT, scope=READ)
    @path(AgentPathSchema)
    @response_schema(AgentItemSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        agent_id = self.request["path"]["agent_id"]
        row = await queries.get_agent(self.request.app[POOL], agent_id=agent_id, creator_id=self.request[USER_ID])
        if row is None:
            raise BadRequestError(f"Agent '{agent_id}' does not exist")
        return json_response(dict(row))

    @docs(tags=["agents"], summary="Edit one of your agents")
    @auth(USER, scope=MANAGE)
    @path(AgentPathSchema)
    @body(AgentUpdateSchema)
    @response_schema(AgentItemSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def patch(self) -> web.Response:
        agent_id = self.request["path"]["agent_id"]
        data = self.request["body"]
        row = await queries.update_agent(
            self.request.app[POOL], agent_id=agent_id, creator_id=self.request[USER_ID],
            name=normalise_name(data["name"]), description=data["description"],
            input_parameters=data["input_parameters"])
        if row is None:
            raise BadRequestError(f"Agent '{agent_id}' does not exist")
        return json_response(dict(row))

    @docs(tags=["agents"], summary="Delete one of your agents (a running agent stays connected)")
    @auth(USER, scope=MANAGE)
    @path(AgentPathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        agent_id = self.request["path"]["agent_id"]
        creator_id = self.request[USER_ID]
        async with self.request.app[POOL].acquire() as conn, conn.transaction():
            if not await queries.delete_agent(conn, agent_id=agent_id, creator_id=creator_id):
                raise BadRequestError(f"Agent {agent_id} was not found")
            # Flows that contained it can no longer run (background-jobs.md §4).
            await reevaluate_flows(conn, creator_id)
        return no_content()


# `active`, `frontend` and `register` before `{agent_id}`: aiohttp matches routes in registration order.
VIEWS = (RegisterAgentView, AgentsView, ActiveAgentsView, FrontendAgentsView, AgentView)
