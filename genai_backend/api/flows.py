"""Agent flows: ordered compositions of the caller's agents, MCP tools and A2A cards (rest-api #12-#16)."""
from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import ANSWERS, respond
from genai_backend.auth.middleware import MANAGE, READ, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError
from genai_backend.naming import normalise_name, with_unique_alias
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.agents import clamp
from genai_backend.schemas.flows import (
    FlowBodySchema,
    FlowListQuerySchema,
    FlowObjectSchema,
    FlowPathSchema,
    FlowRowSchema,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path, query

ALIAS_CONSTRAINT = "agentworkflows_alias_key"


async def check_members(conn: asyncpg.Connection | asyncpg.Pool, creator_id: uuid.UUID,
                        elements: list[dict[str, Any]]) -> None:
    """Every element must be the caller's and active right now (rest-api "active-members check")."""
    ids = [e.get("id") for e in elements]
    types = [e.get("type") for e in elements]
    valid = {r["id"] async for r in queries.list_valid_flow_members(conn, creator_id=creator_id, ids=ids, types=types)}
    invalid = list(dict.fromkeys(i for i in ids if i not in valid))
    if invalid:
        # The list is Python's repr, like the reference: ['<id>'] or [None].
        raise BadRequestError(
            f"One or more agents were not registered previously or are not active: {invalid!r}. "
            "Make sure agent was registered by you and is active before including it into the agent flow")


def stored_flow(elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Elements as given, keys with null values dropped."""
    return [{key: e[key] for key in ("id", "type") if e.get(key) is not None} for e in elements]


class RegisterFlowView(web.View):
    URL_PATH = "/api/agentflows/register"

    @docs(tags=["agentflows"], summary="Compose a flow from your active agents and tools")
    @auth(USER, scope=MANAGE)
    @body(FlowBodySchema)
    @response_schema(FlowRowSchema, 200)
    @response_schema(DetailSchema, 400, description="Bad element, or a member not yours / not active")
    async def post(self) -> web.Response:
        data = self.request["body"]
        creator_id = self.request[USER_ID]
        name = normalise_name(data["name"])
        pool = self.request.app[POOL]
        await check_members(pool, creator_id, data["flow"])

        async def insert(alias: str) -> asyncpg.Record:
            return await queries.create_flow(pool, flow_id=uuid.uuid4(), name=name, description=data["description"],
                                             flow=stored_flow(data["flow"]), alias=alias, creator_id=creator_id)

        row = await with_unique_alias(name, insert, ALIAS_CONSTRAINT)
        return json_response(dict(row))


class FlowsView(web.View):
    URL_PATH = "/api/agentflows/"

    @docs(tags=["agentflows"], summary="List your flows, newest first")
    @auth(USER, scope=READ)
    @query(FlowListQuerySchema)
    @response_schema(FlowObjectSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        answer = await self.request.app[ANSWERS].rows(
            self.request.app[POOL], self.request[USER_ID], queries.list_flows, creator_id=self.request[USER_ID],
            flow_id=None,
            offset=clamp(q["offset"]), limit=clamp(q["limit"]))
        return await respond(self.request, answer)


class FlowView(web.View):
    URL_PATH = "/api/agentflows/{agentflow_id}"

    @docs(tags=["agentflows"], summary="Read one of your flows")
    @auth(USER, scope=READ)
    @path(FlowPathSchema)
    @response_schema(FlowObjectSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        flow_id = self.request["path"]["agentflow_id"]
        rows = [dict(row) async for row in queries.list_flows(
            self.request.app[POOL], creator_id=self.request[USER_ID], flow_id=flow_id, offset=0, limit=1)]
        if not rows:
            raise BadRequestError(f"Flow with id '{flow_id}' does not exist")
        return json_response(rows[0])

    @docs(tags=["agentflows"], summary="Replace one of your flows (it gets a new alias)")
    @auth(USER, scope=MANAGE)
    @path(FlowPathSchema)
    @body(FlowBodySchema)
    @response_schema(FlowRowSchema, 200)
    @response_schema(DetailSchema, 400, description="Bad element, a member not yours / not active, or not found")
    async def patch(self) -> web.Response:
        flow_id = self.request["path"]["agentflow_id"]
        data = self.request["body"]
        creator_id = self.request[USER_ID]
        name = normalise_name(data["name"])
        pool = self.request.app[POOL]
        # Members first: an unknown flow with inactive members gets the members' 400 (rest-api #15).
        await check_members(pool, creator_id, data["flow"])

        async def update(alias: str) -> asyncpg.Record | None:
            return await queries.update_flow(pool, flow_id=flow_id, creator_id=creator_id, name=name,
                                             description=data["description"], flow=stored_flow(data["flow"]),
                                             alias=alias)

        row = await with_unique_alias(name, update, ALIAS_CONSTRAINT)
        if row is None:
            raise BadRequestError(f"Agentflow with ID '{flow_id}' was not found")
        return json_response(dict(row))

    @docs(tags=["agentflows"], summary="Delete one of your flows")
    @auth(USER, scope=MANAGE)
    @path(FlowPathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        flow_id = self.request["path"]["agentflow_id"]
        if not await queries.delete_flow(self.request.app[POOL], flow_id=flow_id, creator_id=self.request[USER_ID]):
            raise BadRequestError(f"agentflow {flow_id} was not found")
        return no_content()


VIEWS = (RegisterFlowView, FlowsView, FlowView)
