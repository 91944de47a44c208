"""A2A agents: register by URL (agent card fetched and validated), list, read, delete (rest-api #35-#38)."""
from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import ANSWERS, respond
from genai_backend.auth.middleware import MANAGE, READ, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.discovery.a2a import CardUnavailable
from genai_backend.discovery.client import DISCOVERY, refusal_detail
from genai_backend.discovery.guard import UrlRefused
from genai_backend.errors import BadRequestError
from genai_backend.flows_state import reevaluate_flows
from genai_backend.naming import new_alias
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.a2a_agents import (
    A2AAgentCreateSchema,
    A2AAgentPathSchema,
    A2AAgentRegisteredSchema,
    A2AAgentSchema,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, path

log = logging.getLogger(__name__)

UNREACHABLE = "Cannot retrieve data about a2a card on url: {url}"


async def store_card(conn: asyncpg.Connection, card: dict[str, Any], creator_id: uuid.UUID) -> asyncpg.Record:
    """Insert the card, or re-activate the caller's existing card of that origin (returned unchanged otherwise).

    The row has a `reactivated` key only when it existed.
    """
    row = await queries.create_a2a_card(
        conn, card_id=uuid.uuid4(), name=card["name"], alias=new_alias(card["name"]),
        description=card["description"], server_url=card["server_url"], card_content=card["card_content"],
        creator_id=creator_id, endpoint_url=card["endpoint_url"], protocol_version=card["protocol_version"],
        transport=card["transport"])
    if row is not None:
        return row
    existing = await queries.activate_a2a_card_by_url(conn, creator_id=creator_id, server_url=card["server_url"])
    if existing is None:  # deleted between the conflict and this read: try once more as new
        return await store_card(conn, card, creator_id)
    return existing


class A2AAgentsView(web.View):
    URL_PATH = "/api/a2a/agents"

    @docs(tags=["a2a"], summary="Register an A2A agent by URL: its agent card is fetched and stored")
    @auth(USER, scope=MANAGE)
    @body(A2AAgentCreateSchema)
    @response_schema(A2AAgentRegisteredSchema, 200)
    @response_schema(DetailSchema, 400, description="No valid card there, or refused by the URL policy")
    async def post(self) -> web.Response:
        url = self.request["body"]["server_url"]
        discovery = self.request.app[DISCOVERY]
        try:
            await discovery.vet(url)
            card = await discovery.card(url)
        except (UrlRefused, CardUnavailable) as exc:
            # The reference's answer text does not say why; the service's log does.
            log.info("A2A registration of %s failed: %s", url, exc)
            raise BadRequestError(refusal_detail(url, exc) or UNREACHABLE.format(url=url)) from None
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        async with pool.acquire() as conn, conn.transaction():
            row = dict(await store_card(conn, card, creator_id))
        if row.pop("reactivated", False):
            await reevaluate_flows(pool, creator_id)
        return json_response({key: value for key, value in row.items() if value is not None})

    @docs(tags=["a2a"], summary="Your A2A agents (active or not), newest first, at most 100")
    @auth(USER, scope=READ)
    @response_schema(A2AAgentSchema(many=True), 200)
    async def get(self) -> web.StreamResponse:
        answer = await self.request.app[ANSWERS].rows(
            self.request.app[POOL], self.request[USER_ID], queries.list_a2a_cards, creator_id=self.request[USER_ID])
        return await respond(self.request, answer)


class A2AAgentView(web.View):
    URL_PATH = "/api/a2a/agents/{agent_id}"

    @docs(tags=["a2a"], summary="One of your A2A agents")
    @auth(USER, scope=READ)
    @path(A2AAgentPathSchema)
    @response_schema(A2AAgentSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def get(self) -> web.Response:
        agent_id = self.request["path"]["agent_id"]
        row = await queries.get_a2a_card(self.request.app[POOL], card_id=agent_id, creator_id=self.request[USER_ID])
        if row is None:
            # The reference's text, trailing space included (rest-api #37).
            raise BadRequestError(f"A2A agent with id: '{agent_id}' does not exist ")
        return json_response(dict(row))

    @docs(tags=["a2a"], summary="Delete one of your A2A agents")
    @auth(USER, scope=MANAGE)
    @path(A2AAgentPathSchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        agent_id = self.request["path"]["agent_id"]
        creator_id = self.request[USER_ID]
        pool = self.request.app[POOL]
        if await queries.delete_a2a_card(pool, card_id=agent_id, creator_id=creator_id) is None:
            # D30: the reference says "MCP server" here.
            raise BadRequestError(f"A2A agent with ID {agent_id} was not found")
        # Flows naming the deleted card are no longer valid.
        await reevaluate_flows(pool, creator_id)
        return no_content()


VIEWS = (A2AAgentsView, A2AAgentView)
