"""Agent logs, readable by their owner only (rest-api #17, D04)."""
from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.answers import ANSWERS, respond
from genai_backend.auth.middleware import CHAT_OR_READ, USER, USER_ID, auth
from genai_backend.db import POOL, queries
from genai_backend.errors import BadRequestError
from genai_backend.schemas.logs import LogQuerySchema, LogSchema
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import query


class LogsView(web.View):
    URL_PATH = "/api/logs/list"

    @docs(tags=["logs"], summary="Logs of your agents for one request or one session, oldest first")
    @auth(USER, scope=CHAT_OR_READ)
    @query(LogQuerySchema)
    @response_schema(LogSchema(many=True), 200)
    @response_schema(DetailSchema, 400, description="Give exactly one of request_id and session_id")
    async def get(self) -> web.StreamResponse:
        q = self.request["query"]
        if "request_id" in q and "session_id" in q:
            raise BadRequestError("Only 'request_id' or 'session_id' could be provided but not both")
        pool = self.request.app[POOL]
        creator_id = self.request[USER_ID]
        if "request_id" in q:
            listing, match = queries.list_logs_by_request, {"request_id": q["request_id"]}
        elif "session_id" in q:
            listing, match = queries.list_logs_by_session, {"session_id": q["session_id"]}
        else:
            raise BadRequestError("Either 'request_id' or 'session_id' must be provided")
        return await respond(self.request, await self.request.app[ANSWERS].rows(
            pool, creator_id, listing, creator_id=creator_id, **match))


VIEWS = (LogsView,)
