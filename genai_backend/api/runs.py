"""Chat runs over HTTP: send a message (JSON answer or SSE), a run's state, its events (resumable), cancel."""
from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs, response_schema

from genai_backend.auth.middleware import CHAT, CHAT_OR_READ, USER, USER_ID, auth
from genai_backend.errors import ApiError, BadRequestError
from genai_backend.quotas import TooManyRequests
from genai_backend.responses import json_response
from genai_backend.runs import RUNS, RunConflict, TooManyRuns, TurnRefused, answer_of
from genai_backend.schemas.runs import AnswerSchema, MessageSchema, RunPathSchema, RunSchema, SessionPathSchema
from genai_backend.schemas.users import DetailSchema
from genai_backend.validation import FieldError, body, parse_uuid, path

HEARTBEAT = 15.0
SSE_DESCRIPTION = ("`text/event-stream`: events `run.started`, `agent.log`, then `run.completed`, `run.failed` or "
                   "`run.cancelled`, each with an increasing `id:`; `: keep-alive` comments while waiting")


class Refused(ApiError):
    def __init__(self, detail: Any, status: int) -> None:
        super().__init__(detail)
        self.status = status


class Conflict(ApiError):
    status = 409


class RunNotFound(ApiError):
    status = 404


class RunFailed(ApiError):
    status = 502


class RouterDown(ApiError):
    status = 503


def _wants_stream(request: web.Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def _request_id(request: web.Request, data: dict[str, Any]) -> uuid.UUID | None:
    """The client's id for this send: the body's `request_id`, else the `Idempotency-Key` header."""
    if data.get("request_id") is not None:
        return uuid.UUID(str(data["request_id"]))
    header = request.headers.get("Idempotency-Key")
    if not header:
        return None
    try:
        return parse_uuid(header)
    except FieldError:
        # Any string may be an idempotency key: map it to a stable id of its own.
        return uuid.uuid5(uuid.NAMESPACE_URL, f"idempotency-key:{header}")


async def stream_events(request: web.Request, run_id: uuid.UUID, after: int) -> web.StreamResponse:
    """The run's events after `after` as SSE, live until its final event (the run goes on if the client leaves)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        async for item in request.app[RUNS].events(run_id, after, heartbeat=HEARTBEAT):
            if item is None:
                await resp.write(b": keep-alive\n\n")
                continue
            seq, event, data = item
            await resp.write(f"id: {seq}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        return resp
    await resp.write_eof()
    return resp


def answer_response(run: Any) -> web.Response:
    """The JSON answer of an ended run: the WebSocket's answer object, or the failure."""
    answer = answer_of(run)
    if run["state"] == "failed":
        detail = answer.get("detail") if isinstance(answer, dict) else "Run failed"
        if isinstance(answer, dict) and answer.get("reason") == "router_unreachable":
            raise RouterDown(detail)
        raise RunFailed(detail)
    return json_response(answer)


class MessagesView(web.View):
    URL_PATH = "/api/chats/{session_id}/messages"

    @docs(tags=["runs"], summary="Send a chat message: the answer as JSON, or the run's events as SSE",
          description="The same turn as the WebSocket. `request_id` (or an `Idempotency-Key` header) makes a "
                      "retry safe: an in-flight duplicate attaches to the run, a finished one gets the stored "
                      "answer. " + SSE_DESCRIPTION + ". Leaving early does not stop the run.")
    @auth(USER, scope=CHAT)
    @path(SessionPathSchema)
    @body(MessageSchema)
    @response_schema(AnswerSchema, 200, description="With `Accept: application/json`: the WebSocket's answer object "
                     "`{\"type\": \"agent_response\", \"response\": {...}}`; otherwise the SSE stream")
    @response_schema(DetailSchema, 400, description="Unknown provider or config, unreadable provider key")
    @response_schema(DetailSchema, 403, description="The conversation belongs to another user")
    @response_schema(DetailSchema, 409, description="The request id was used with a different message")
    @response_schema(DetailSchema, 429, description="MAX_RUNS_PER_USER runs in flight already (Retry-After)")
    @response_schema(DetailSchema, 502, description="The turn failed")
    @response_schema(DetailSchema, 503, description="The router cannot be reached")
    async def post(self) -> web.StreamResponse:
        data = self.request["body"]
        session_id = self.request["path"]["session_id"]
        runs = self.request.app[RUNS]
        frame = {"message": data["message"], "provider": data["provider"], "llm_name": data["llm_name"],
                 "files": data["files"]}
        try:
            submitted = await runs.submit(self.request[USER_ID], session_id, frame,
                                          _request_id(self.request, data), {})
        except RunConflict as exc:
            raise Conflict(str(exc)) from None
        except TurnRefused as exc:
            raise Refused(exc.message, exc.status) from None
        except TooManyRuns as exc:
            raise TooManyRequests(str(exc), exc.retry_after) from None
        if _wants_stream(self.request):
            return await stream_events(self.request, submitted.run["id"], 0)
        run, _ = await runs.wait(submitted.run["id"])
        return answer_response(run)


async def _run(request: web.Request) -> Any:
    p = request["path"]
    run = await request.app[RUNS].get(request[USER_ID], p["session_id"], p["request_id"])
    if run is None:
        raise RunNotFound(f"Run {p['request_id']} was not found")
    return run


class RunView(web.View):
    URL_PATH = "/api/chats/{session_id}/runs/{request_id}"

    @docs(tags=["runs"], summary="A run's state (`running`, `completed`, `failed`, `cancelled`) and its answer")
    @auth(USER, scope=CHAT_OR_READ)
    @path(RunPathSchema)
    @response_schema(RunSchema, 200)
    @response_schema(DetailSchema, 404, description="No such run of yours")
    async def get(self) -> web.Response:
        run = await _run(self.request)
        return json_response({"request_id": run["request_id"], "session_id": run["session_id"],
                              "state": run["state"], "answer": answer_of(run), "created_at": run["created_at"],
                              "finished_at": run["finished_at"]})


class RunEventsView(web.View):
    URL_PATH = "/api/chats/{session_id}/runs/{request_id}/events"

    @docs(tags=["runs"], summary="A run's events as SSE, from the start or after `Last-Event-ID`, live until it ends",
          description=SSE_DESCRIPTION + ".", responses={200: {"description": "The SSE stream"}})
    @auth(USER, scope=CHAT_OR_READ)
    @path(RunPathSchema)
    @response_schema(DetailSchema, 400, description="Last-Event-ID is not a number")
    @response_schema(DetailSchema, 404, description="No such run of yours")
    async def get(self) -> web.StreamResponse:
        run = await _run(self.request)
        raw = self.request.headers.get("Last-Event-ID", "").strip() or "0"
        try:
            after = int(raw)
        except ValueError:
            raise BadRequestError("Last-Event-ID must be an event id") from None
        return await stream_events(self.request, run["id"], max(after, 0))


class RunCancelView(web.View):
    URL_PATH = "/api/chats/{session_id}/runs/{request_id}/cancel"

    @docs(tags=["runs"], summary="Cancel a running run: it ends as `cancelled` at once, a later answer is discarded")
    @auth(USER, scope=CHAT)
    @path(RunPathSchema)
    @response_schema(RunSchema, 200, description="The run, now cancelled")
    @response_schema(DetailSchema, 404, description="No such run of yours")
    @response_schema(DetailSchema, 409, description="The run has ended already")
    async def post(self) -> web.Response:
        run = await _run(self.request)
        if not await self.request.app[RUNS].cancel(run):
            raise Conflict(f"Run {run['request_id']} has ended already ({run['state']})")
        run = await _run(self.request)
        return json_response({"request_id": run["request_id"], "session_id": run["session_id"],
                              "state": run["state"], "answer": answer_of(run), "created_at": run["created_at"],
                              "finished_at": run["finished_at"]})


VIEWS = (MessagesView, RunView, RunEventsView, RunCancelView)
