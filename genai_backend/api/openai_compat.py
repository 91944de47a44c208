"""OpenAI-compatible chat: `POST /v1/chat/completions` and `GET /v1/models` on top of runs (README "Programmatic chat").

A model is one of the caller's model configs, spelled `provider/config_name`. The master agent reads
a conversation's history from this service, so the client's earlier messages are stored in a fresh
conversation first and the last user message is run in it like any chat message. Errors use
OpenAI's shape, `{"error": {"message", "type", "code"}}`, so OpenAI clients can show them.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp_apigami import docs

from genai_backend import limits
from genai_backend.auth import api_keys
from genai_backend.auth.middleware import bearer_token, user_from_token
from genai_backend.db import POOL, queries
from genai_backend.errors import ApiError
from genai_backend.openapi import GK_KEY, OAUTH2
from genai_backend.responses import json_response
from genai_backend.runs import RUNS, TITLE_LENGTH, TooManyRuns, TurnRefused, answer_of

SECURITY: list[dict[str, list[str]]] = [{OAUTH2: []}, {GK_KEY: []}]
ROLES = {"user": "user", "assistant": "master_agent"}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers

    def response(self) -> web.Response:
        return json_response({"error": {"message": self.message, "type": self.kind, "code": self.code}},
                             status=self.status, headers=self.headers)


async def _user(request: web.Request) -> uuid.UUID:
    """A user JWT or an API key with the `chat` scope; refusals in OpenAI's shape."""
    try:
        token = bearer_token(request)
        if api_keys.is_key(token):
            return await api_keys.user_from_key(request.app[POOL], token, (api_keys.CHAT,))
        return await user_from_token(request, token, allow_agent=False)
    except ApiError as exc:
        if exc.status == 403:
            raise OpenAIError(403, str(exc.detail), "permission_error", "insufficient_scope") from None
        raise OpenAIError(401, str(exc.detail), "invalid_request_error", "invalid_api_key") from None


async def _models(request: web.Request, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = queries.list_user_models(request.app[POOL], user_id=user_id)
    return [{"id": f"{r['provider']}/{r['config_name']}", "object": "model",
             "created": int(r["created_at"].timestamp()), "owned_by": r["provider"]} async for r in rows]


def _invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param and f"invalid_{param}")


def _text(content: Any) -> str:
    """A message's content: a string, or OpenAI's list of parts (the text parts are kept)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise _invalid("messages[].content must be a string or a list of content parts", "messages")


def _parse(raw: Any) -> tuple[str, list[tuple[str, str]], bool]:
    if not isinstance(raw, dict):
        raise _invalid("The request body must be a JSON object")
    model, messages = raw.get("model"), raw.get("messages")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required", "model")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list", "messages")
    parsed = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid("each message needs a 'role' and a 'content'", "messages")
        parsed.append((message["role"], _text(message.get("content"))))
    if parsed[-1][0] != "user":
        raise _invalid("the last message must be the user's", "messages")
    return model, parsed, raw.get("stream") is True


def _completion_text(answer: Any) -> tuple[str, bool]:
    """The master agent's text, and whether it succeeded."""
    response = answer.get("response", {}).get("response") if isinstance(answer, dict) else None
    if isinstance(response, dict):
        text = response.get("response")
        return (text if isinstance(text, str) else json.dumps(text)), response.get("is_success", True) is not False
    return ("" if response is None else str(response)), True


def _failure(run: Any) -> OpenAIError | None:
    answer = answer_of(run)
    if run["state"] == "failed":
        detail = answer.get("detail", "Run failed") if isinstance(answer, dict) else "Run failed"
        return OpenAIError(502, detail, "server_error", "run_failed")
    if run["state"] == "cancelled":
        return OpenAIError(409, "The run was cancelled", "invalid_request_error", "run_cancelled")
    text, ok = _completion_text(answer)
    return None if ok else OpenAIError(502, text or "The master agent failed", "server_error", "agent_error")


class ModelsView(web.View):
    URL_PATH = "/v1/models"

    @docs(tags=["openai"], summary="OpenAI-compatible: your model configs as models (`provider/config_name`)",
          security=SECURITY, responses={200: {"description": "`{\"object\": \"list\", \"data\": [model...]}`"},
                                        401: {"description": "OpenAI error shape"}})
    async def get(self) -> web.Response:
        try:
            user_id = await _user(self.request)
        except OpenAIError as exc:
            return exc.response()
        return json_response({"object": "list", "data": await _models(self.request, user_id)})


class CompletionsView(web.View):
    URL_PATH = "/v1/chat/completions"

    @docs(tags=["openai"], summary="OpenAI-compatible chat completion: the master agent answers the messages",
          description="`model` is `provider/config_name` (GET /v1/models). The earlier messages become the "
                      "conversation the master agent reads; the last (a user message) is run. `stream: true` "
                      "answers with `chat.completion.chunk` SSE ending `data: [DONE]`; the answer comes as one "
                      "delta. No token usage. API keys need the `chat` scope.",
          security=SECURITY,
          responses={200: {"description": "`chat.completion`, or the chunk stream"},
                     400: {"description": "OpenAI error shape: invalid request"},
                     401: {"description": "OpenAI error shape: invalid_api_key"},
                     404: {"description": "OpenAI error shape: model_not_found"},
                     429: {"description": "OpenAI error shape: rate_limit_exceeded (MAX_RUNS_PER_USER runs in "
                                          "flight), with Retry-After"}})
    async def post(self) -> web.StreamResponse:
        try:
            return await self._complete()
        except OpenAIError as exc:
            return exc.response()

    async def _complete(self) -> web.StreamResponse:
        request = self.request
        user_id = await _user(request)
        try:
            raw = limits.loads(await request.read())
        except ValueError:
            raise _invalid("The request body is not valid JSON") from None
        model, messages, stream = _parse(raw)
        if model not in {m["id"] for m in await _models(request, user_id)}:
            raise OpenAIError(404, f"The model '{model}' does not exist", "invalid_request_error", "model_not_found")
        provider, _, config_name = model.partition("/")
        earlier = [(ROLES[role], self._stored(role, text)) for role, text in messages[:-1] if role in ROLES]
        last = messages[-1][1]
        session_id = uuid.uuid4()
        await queries.create_conversation_with_messages(
            request.app[POOL], session_id=session_id, creator_id=user_id, title=last[:TITLE_LENGTH] or "New Chat",
            senders=[s for s, _ in earlier], contents=[c for _, c in earlier])
        frame = {"message": last, "provider": provider, "llm_name": config_name, "files": []}
        runs = request.app[RUNS]
        try:
            submitted = await runs.submit(user_id, session_id, frame, None, {})
        except TurnRefused as exc:
            raise OpenAIError(exc.status, exc.message, "invalid_request_error", None) from None
        except TooManyRuns as exc:
            raise OpenAIError(429, str(exc), "requests", "rate_limit_exceeded",
                              headers={"Retry-After": str(int(exc.retry_after))}) from None
        run_id = submitted.run["id"]
        completion_id = f"chatcmpl-{submitted.run['request_id'].hex}"
        created = int(time.time())
        if stream:
            return await self._stream(run_id, completion_id, created, model)
        run, _ = await runs.wait(run_id)
        if (failure := _failure(run)) is not None:
            raise failure
        text, _ = _completion_text(answer_of(run))
        return json_response({
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})

    @staticmethod
    def _stored(role: str, text: str) -> str:
        # History holds master-agent answers as JSON answer objects, as the chat turn stores them.
        if role == "assistant":
            return json.dumps({"agents_trace": [], "response": text, "is_success": True})
        return text

    async def _stream(self, run_id: uuid.UUID, completion_id: str, created: int, model: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(self.request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(body)}\n\n".encode()

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            async for item in self.request.app[RUNS].events(run_id, 0, heartbeat=15.0):
                if item is None:
                    await resp.write(b": keep-alive\n\n")
                    continue
                _, event, data = item
                if event == "run.completed":
                    text, ok = _completion_text(data)
                    if not ok:
                        error = {"message": text, "type": "server_error", "code": "agent_error"}
                        await resp.write(f"data: {json.dumps({'error': error})}\n\n".encode())
                    else:
                        await resp.write(chunk({"content": text}))
                        await resp.write(chunk({}, "stop"))
                elif event in ("run.failed", "run.cancelled"):
                    message = data.get("detail", "The run was cancelled") if isinstance(data, dict) else "failed"
                    error = {"message": message, "type": "server_error", "code": event.replace(".", "_")}
                    await resp.write(f"data: {json.dumps({'error': error})}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionError:
            return resp
        await resp.write_eof()
        return resp


VIEWS = (ModelsView, CompletionsView)
