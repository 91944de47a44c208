"""Conversations and their history (rest-api #26-#30); the WebSocket creates them (api/ws.py)."""
from __future__ import annotations

import math
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs, response_schema
from yarl import URL

from genai_backend.answers import ANSWERS, Answer, Items, respond
from genai_backend.auth.middleware import CHAT, CHAT_OR_READ, DUAL, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError
from genai_backend.responses import json_response, no_content
from genai_backend.schemas.agents import clamp
from genai_backend.schemas.chats import (
    ChatCreateSchema,
    ChatHistoryQuerySchema,
    ChatHistorySchema,
    ChatListQuerySchema,
    ChatListSchema,
    ChatRowSchema,
    ChatSessionQuerySchema,
    ChatTitleSchema,
)
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import body, query


def page_url(url: URL, page: int) -> str:
    """The request's absolute URL with `page` moved to the end (README "Pagination")."""
    params = [(key, value) for key, value in url.query.items() if key != "page"]
    return str(url.with_query(params + [("page", str(page))]))


def page_head(url: URL, page: int, per_page: int, total: int) -> dict[str, Any]:
    """A page's envelope but for its `items`, which follow it (README "Pagination")."""
    # per_page=0 is an empty page with no neighbours, not a division by zero (D15).
    pages = math.ceil(total / per_page) if per_page else 0
    has_next = per_page > 0 and page < pages
    has_previous = per_page > 0 and page != 1 and page <= pages + 1
    return {"total_count": total,
            "next_page": page_url(url, page + 1) if has_next else None,
            "previous_page": page_url(url, page - 1) if has_previous else None}


class ChatsView(web.View):
    URL_PATH = "/api/chats"

    @docs(tags=["chats"], summary="Your conversations, newest first")
    @auth(USER, scope=CHAT_OR_READ)
    @query(ChatListQuerySchema)
    @response_schema(ChatListSchema, 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        pool = self.request.app[POOL]

        async def attempt(items: Items) -> Answer:
            await items.fetch(pool, queries.list_chats, creator_id=self.request[USER_ID],
                              offset=clamp(q["offset"]), limit=clamp(q["limit"]))
            return items.array({}, "chats")

        return await respond(self.request, await self.request.app[ANSWERS].build(attempt, self.request[USER_ID]))

    @docs(tags=["chats"], summary="Create a conversation (the WebSocket normally does)")
    @auth(USER, scope=CHAT)
    @body(ChatCreateSchema)
    @response_schema(ChatRowSchema, 200)
    @response_schema(DetailSchema, 400, description="Session id taken")
    async def post(self) -> web.Response:
        data = self.request["body"]
        try:
            row = await queries.create_chat(self.request.app[POOL], session_id=data["session_id"],
                                            title=data["title"], creator_id=self.request[USER_ID])
        except asyncpg.UniqueViolationError:
            raise BadRequestError(f"Chat with Session_id - '{data['session_id']}' already exists") from None
        return json_response(dict(row))


class ChatView(web.View):
    URL_PATH = "/api/chat"

    @docs(tags=["chats"], summary="A conversation's messages, newest first (also for the master agent)")
    @auth(DUAL, scope=CHAT_OR_READ)
    @query(ChatHistoryQuerySchema)
    @response_schema(ChatHistorySchema, 200)
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        page, per_page = q["page"], q["per_page"]
        pool = self.request.app[POOL]
        total = 0

        def message(row: asyncpg.Record) -> dict[str, Any] | None:
            nonlocal total
            # Every row carries the count; a chat with no messages is one row with no message.
            total = row["total_count"]
            if row["sender_type"] is None:
                return None
            return {key: row[key] for key in ("sender_type", "content", "request_id", "created_at")}

        async def attempt(items: Items) -> Answer:
            await items.fetch(pool, queries.list_chat_messages, message, creator_id=self.request[USER_ID],
                              session_id=q["session_id"], offset=clamp((page - 1) * per_page),
                              limit=clamp(per_page))
            return items.array(page_head(self.request.url, page, per_page, total), "items")

        return await respond(self.request, await self.request.app[ANSWERS].build(attempt, self.request[USER_ID]))

    @docs(tags=["chats"], summary="Rename a conversation")
    @auth(USER, scope=CHAT)
    @query(ChatSessionQuerySchema)
    @body(ChatTitleSchema)
    @response_schema(ChatRowSchema, 200)
    @response_schema(DetailSchema, 400, description="Not found")
    async def patch(self) -> web.Response:
        session_id = self.request["query"]["session_id"]
        row = await queries.rename_chat(self.request.app[POOL], creator_id=self.request[USER_ID],
                                        session_id=session_id, title=self.request["body"]["title"])
        if row is None:
            raise BadRequestError(f"Chat with session_id {session_id} does not exist")
        return json_response(dict(row))

    @docs(tags=["chats"], summary="Delete a conversation and its messages")
    @auth(USER, scope=CHAT)
    @query(ChatSessionQuerySchema)
    @response_schema(DetailSchema, 400, description="Not found")
    async def delete(self) -> web.Response:
        session_id = self.request["query"]["session_id"]
        if await queries.delete_chat(self.request.app[POOL], creator_id=self.request[USER_ID],
                                     session_id=session_id) is None:
            raise BadRequestError(f"Chat with session_id: '{session_id}' does not exist")
        return no_content()


VIEWS = (ChatsView, ChatView)
