"""The front-end WebSocket `/frontend/ws`: one chat message in, the master agent's answer out (websocket.md).

The handshake is checked before the upgrade (a refusal is an HTTP 403). Messages on a socket are
handled one after the other; every send goes through the socket registry, which serialises them
with the agent-log pushes of the bus. No database connection is held between statements.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, NoReturn

from aiohttp import WSMsgType, web

from genai_backend import limits
from genai_backend.auth import api_keys, tokens
from genai_backend.config import SETTINGS
from genai_backend.db import POOL
from genai_backend.errors import ApiError
from genai_backend.observability import metrics, tracing
from genai_backend.observability.logs import set_user
from genai_backend.quotas import SOCKET_SLOTS, take_socket_slot, too_many_sockets
from genai_backend.runs import (
    FOREIGN_SESSION,
    ROUTER_DOWN,
    RUNS,
    UNEXPECTED,
    RunConflict,
    TooManyRuns,
    TurnRefused,
    answer_of,
)
from genai_backend.schemas.chats import ChatFrameSchema
from genai_backend.sockets import SOCKETS
from genai_backend.validation import FieldError, parse_fields, parse_uuid

log = logging.getLogger(__name__)

TOKEN_MISSING = "JWT token is expired or invalid"
TOKEN_INVALID = "JWT token is invalid or expired"
BAD_SESSION = "session_id is not a valid UUID"
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
        runs = self.app[RUNS]
        request_id = frame["request_id"] or uuid.uuid4()
        metrics.CHAT_STARTED.inc()
        try:
            with tracing.turn_request(request_id):
                submitted = await runs.submit(self.user_id, self.session_id, frame, request_id, self.verified_keys)
                run, result = await runs.wait(submitted.run["id"])
        except RunConflict as exc:
            metrics.CHAT_FAILED.labels("rejected").inc()
            await self.send({"error": f"Message validation failed. Details: request_id: {exc}"})
            return
        except TooManyRuns as exc:
            # The socket stays open: the next message, once a run has finished, is accepted.
            metrics.CHAT_FAILED.labels("rejected").inc()
            await self.send({"error": str(exc)})
            return
        except TurnRefused as exc:
            metrics.CHAT_FAILED.labels("rejected").inc()
            await self.close(exc.message, exc.close_code)
        except Exception:
            log.exception("chat of user %s failed", self.user_id)
            metrics.CHAT_FAILED.labels("error").inc()
            await self.close(UNEXPECTED, 1011)
        answer = answer_of(run)
        if run is None or run["state"] == "failed" or not isinstance(answer, dict):
            reason = answer.get("reason") if isinstance(answer, dict) else "error"
            metrics.CHAT_FAILED.labels(reason).inc()
            await self.close(ROUTER_DOWN if reason == "router_unreachable" else UNEXPECTED, 1011)
        await self.send(answer)
        success = result.is_success if result is not None else run["state"] == "completed"
        metrics.CHAT_FINISHED.labels("success" if success else "error").inc()
        if result is not None and log.isEnabledFor(logging.DEBUG):
            pre, post = (result.sent_at - received) * 1000, (time.perf_counter() - result.answered_at) * 1000
            log.debug("chat turn: %.3f ms before the invocation, %.3f ms after the answer", pre, post,
                      extra={"chat_timing": (pre, post)})


VIEWS = (ChatSocketView,)
