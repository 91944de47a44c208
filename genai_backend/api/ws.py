"""The front-end WebSocket `/frontend/ws`: one chat message in, the master agent's answer out (websocket.md).

The handshake is checked before the upgrade (a refusal is an HTTP 403). Messages on a socket are
handled one after the other; every send goes through the socket registry, which serialises them
with the agent-log pushes of the bus. No database connection is held between statements.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, NoReturn

from aiohttp import WSMsgType, web

from genai_backend import limits
from genai_backend.auth import api_keys, secrets, tokens
from genai_backend.bus.invoke import INVOKER, Invocation, RouterUnreachable
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import ApiError
from genai_backend.observability import metrics, tracing
from genai_backend.observability.logs import set_user
from genai_backend.quotas import SOCKET_SLOTS, take_socket_slot, too_many_sockets
from genai_backend.schemas.chats import ChatFrameSchema
from genai_backend.sockets import SOCKETS
from genai_backend.storage import FILES
from genai_backend.validation import FieldError, parse_fields, parse_uuid

log = logging.getLogger(__name__)

TOKEN_MISSING = "JWT token is expired or invalid"
TOKEN_INVALID = "JWT token is invalid or expired"
BAD_SESSION = "session_id is not a valid UUID"
FOREIGN_SESSION = "session_id belongs to another user"
DECRYPT_FAILED = ("Could not decrypt api_key. Make sure 'api_key' exists and model config was created "
                  "beforehand ")
ROUTER_DOWN = "Cannot connect to router service. Try again later"
UNEXPECTED = "Unexpected error occured. Try again later"
TITLE_LENGTH = 20
HEARTBEAT = 30.0
MAX_FRAME = 4 * 1024 * 1024
_FRAME_SCHEMA = ChatFrameSchema()


class HandshakeRefused(ApiError):
    # The reference closes with 1008 before accepting, which reaches the client as HTTP 403.
    status = 403


class SocketClosed(Exception):
    """The message ended the conversation; the socket is closed."""


def parse_frame(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The validated message, or the summary for the validation-failed frame (D07)."""
    try:
        raw = limits.loads(text)
    except ValueError as exc:
        return None, f"Invalid JSON: {exc}"
    if not isinstance(raw, dict):
        return None, "Input should be a valid dictionary or object to extract fields from"
    data, errors = parse_fields(_FRAME_SCHEMA, raw, whole=raw)
    if errors:
        return None, "; ".join(f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for e in errors)
    return data, None


def _uuids(values: list[str]) -> list[uuid.UUID]:
    """The parseable ids; malformed ones are ignored (websocket.md §3 step 5)."""
    ids = []
    for value in values:
        try:
            ids.append(parse_uuid(value))
        except FieldError:
            continue
    return ids


def _configs(llm: Any, api_key: str | None) -> dict[str, Any]:
    """Fixed keys, then credentials, then provider metadata, then the key (websocket.md §3 step 7)."""
    configs = {"provider": llm["provider"], "model": llm["model"], "temperature": llm["temperature"],
               "system_prompt": llm["system_prompt"], "user_prompt": llm["user_prompt"],
               "config_name": llm["config_name"], "max_last_messages": llm["max_last_messages"]}
    for extra in (llm["credentials"], llm["metadata"]):
        if isinstance(extra, dict):
            configs.update(extra)
    configs["api_key"] = api_key
    return configs


def _answer_object(result: Invocation) -> Any:
    # D09: a failure is shaped like an answer, so the front-end can render it and its history.
    if result.is_success:
        return result.response
    return {"agents_trace": [], "response": str(result.response), "is_success": False}


class ChatSocketView(web.View):
    URL_PATH = "/frontend/ws"
    # The hash of the API key the socket was opened with (None for a user JWT).
    api_key_hash: bytes | None = None

    async def get(self) -> web.WebSocketResponse:
        user_id, session_id, slot_id = await self._handshake()
        registry = self.request.app[SOCKETS]
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
        try:
            await ws.prepare(self.request)
            registry.add(user_id, ws)
            chat = ChatTurns(self.request.app, ws, user_id, session_id)
            chat.api_key_hash = self.api_key_hash
            async for msg in ws:
                received = time.perf_counter()
                if msg.type is WSMsgType.TEXT:
                    with tracing.chat_turn():
                        await chat.handle(msg.data, received)
                elif msg.type is WSMsgType.BINARY:
                    await chat.send({"error": "Message validation failed. Details: expected a text frame"})
        except SocketClosed:
            pass
        finally:
            registry.remove(user_id, ws)
            await self.request.app[SOCKET_SLOTS].release(self.request.app, slot_id)
        return ws

    async def _handshake(self) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        """websocket.md §1, every check before the upgrade."""
        token = self.request.query.get("token", "")
        if not token:
            raise HandshakeRefused(TOKEN_MISSING)
        user_id = await self._key_user(token) if api_keys.is_key(token) else self._jwt_user(token)
        raw_session = self.request.query.get("session_id", "")
        try:
            # An empty value counts as absent, like the reference's truthiness test.
            session_id = parse_uuid(raw_session) if raw_session else uuid.uuid4()
        except FieldError:
            raise HandshakeRefused(BAD_SESSION) from None
        user_exists, foreign_session, slot_id = await take_socket_slot(self.request, user_id, session_id)
        if not user_exists:
            raise HandshakeRefused(TOKEN_INVALID)
        if foreign_session:
            raise HandshakeRefused(FOREIGN_SESSION)  # D28
        if slot_id is None:
            settings = self.request.app[SETTINGS]
            raise too_many_sockets(settings.max_sockets_per_user, settings.socket_slot_ttl)
        set_user(user_id)
        return user_id, session_id, slot_id

    def _jwt_user(self, token: str) -> uuid.UUID:
        try:
            claims = tokens.decode(token, self.request.app[SETTINGS].secret_keys)
        except tokens.InvalidToken:
            raise HandshakeRefused(TOKEN_INVALID) from None
        if claims.is_agent:
            raise HandshakeRefused(TOKEN_INVALID)
        return claims.sub

    async def _key_user(self, key: str) -> uuid.UUID:
        digest = api_keys.key_hash(key)
        grant = await api_keys.lookup_hash(self.request.app[POOL], digest)
        if grant is None:
            raise HandshakeRefused(TOKEN_INVALID)
        problem = api_keys.missing_scope(grant, (api_keys.CHAT,))
        if problem is not None:
            raise HandshakeRefused(problem)
        self.api_key_hash = digest
        return grant.user_id


class ChatTurns:
    """One socket's conversation: each `handle` is one message's round trip (websocket.md §3)."""

    # Set for a socket opened with an API key: every message re-checks it, so a revoked or expired
    # key stops an open socket too, not only new handshakes.
    api_key_hash: bytes | None = None

    def __init__(self, app: web.Application, ws: web.WebSocketResponse, user_id: uuid.UUID,
                 session_id: uuid.UUID) -> None:
        self.app = app
        self.ws = ws
        self.user_id = user_id
        self.session_id = session_id
        # provider name -> the stored ciphertext last seen to decrypt. Only a hint: the database
        # writes nothing unless the provider's key still equals it (sql/chats.sql start_chat_turn).
        self.verified_keys: dict[str, str] = {}

    async def send(self, payload: Any) -> None:
        await self.app[SOCKETS].send(self.ws, payload)

    async def close(self, message: str, code: int) -> NoReturn:
        await self.send({"error": message})
        # A close reason is at most 123 bytes; never cut a character in half.
        await self.ws.close(code=code, message=message.encode()[:123].decode("utf-8", "ignore").encode())
        raise SocketClosed()

    async def handle(self, text: str, received: float) -> None:
        frame, problem = parse_frame(text)
        if frame is None:
            # D07: report and wait for the next frame; nothing of this one is processed.
            await self.send({"error": f"Message validation failed. Details: {problem}"})
            return
        if self.api_key_hash is not None and not await api_keys.hash_is_live(self.app[POOL], self.api_key_hash):
            await self.close(TOKEN_INVALID, 1008)
        request_id = uuid.uuid4()
        metrics.CHAT_STARTED.inc()
        try:
            with tracing.turn_request(request_id):
                turn, api_key = await self._start(frame, request_id)
                answer, result = await self._invoke_and_store(turn, api_key, request_id)
        except SocketClosed:
            metrics.CHAT_FAILED.labels("rejected").inc()
            raise
        except RouterUnreachable as exc:
            log.warning("chat of user %s: router unreachable: %s", self.user_id, exc)
            metrics.CHAT_FAILED.labels("router_unreachable").inc()
            await self.close(ROUTER_DOWN, 1011)
        except Exception:
            log.exception("chat of user %s failed", self.user_id)
            metrics.CHAT_FAILED.labels("error").inc()
            await self.close(UNEXPECTED, 1011)
        await self.send(answer)
        metrics.CHAT_FINISHED.labels("success" if result.is_success else "error").inc()
        if log.isEnabledFor(logging.DEBUG):
            pre, post = (result.sent_at - received) * 1000, (time.perf_counter() - result.answered_at) * 1000
            log.debug("chat turn: %.3f ms before the invocation, %.3f ms after the answer", pre, post,
                      extra={"chat_timing": (pre, post)})

    async def _start(self, frame: dict[str, Any], request_id: uuid.UUID) -> tuple[Any, str | None]:
        """Steps 2-6: the configuration (closing the socket if it is missing or its key unreadable),
        then the conversation, the attachments and the user message."""
        secret = self.app[SETTINGS].secret_keys
        provider, message = frame["provider"], frame["message"]
        known_key = self.verified_keys.get(provider)
        for _ in range(3):
            turn = await queries.start_chat_turn(
                self.app[POOL], creator_id=self.user_id, provider=provider, config_name=frame["llm_name"],
                api_key=known_key, session_id=self.session_id, title=message[:TITLE_LENGTH] or "New Chat",
                request_id=request_id, message=message, file_ids=_uuids(frame["files"]))
            if turn["provider_id"] is None:
                await self.close(f"Provider {provider} does not exist", 1003)
            if turn["config_id"] is None:
                await self.close(f"Config {frame['llm_name']} does not exist", 1003)
            if turn["ready"]:
                break
            # A key this socket has not decrypted yet: check it before anything is written.
            known_key = turn["api_key"]
            if known_key is not None:
                try:
                    await secrets.decrypt(known_key, secret)
                except secrets.InvalidCiphertext:
                    await self.close(DECRYPT_FAILED, 1000)
        else:
            raise RuntimeError("the provider's key kept changing")
        if not turn["stored"]:
            # Another user created this session id after the handshake (D28 holds past it too).
            await self.close(FOREIGN_SESSION, 1008)
        if known_key is None:
            return turn, None
        self.verified_keys[provider] = known_key
        return turn, await secrets.decrypt(known_key, secret)  # memoised: no scrypt here

    async def _invoke_and_store(self, turn: Any, api_key: str | None,
                                request_id: uuid.UUID) -> tuple[dict[str, Any], Invocation]:
        """Steps 7-11: invoke, store the answer (a failure shaped as one), collect result files."""
        payload = {"session_id": str(self.session_id), "user_id": str(self.user_id),
                   "configs": _configs(turn, api_key), "files": turn["files"], "timestamp": int(time.time())}
        result = await self.app[INVOKER].invoke(payload, request_id, self.session_id)
        response = _answer_object(result)
        content = response if isinstance(response, str) else json.dumps(response)
        finished = await queries.finish_chat_turn(self.app[POOL], session_id=self.session_id,
                                                  creator_id=self.user_id, request_id=request_id, content=content)
        files = finished["files"]
        if files:
            present = await self.app[FILES].existing(f["internal_name"] for f in files)
            files = [f for f in files if f["internal_name"] in present]
        answer: dict[str, Any] = {"type": "agent_response", "response": {
            "execution_time": result.execution_time if result.is_success else 0.0, "response": response,
            "request_id": str(request_id), "session_id": str(self.session_id), "files": files}}
        if (trace_id := tracing.trace_id()) is not None:
            answer["response"]["trace_id"] = trace_id  # additive: only while tracing is on
        return answer, result


VIEWS = (ChatSocketView,)
