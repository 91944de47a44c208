"""Invoking the master agent for one chat message (agent-bus.md §6), with a fresh router identity.

Every request uses its own router connection, opened with the invoke key
`<MASTER_BE_API_KEY>:<uuid4>:master_server_ml` and used for that one request only: unique, so
concurrent chats can never take over each other's socket in the router's id map (D06); starting
with the back-end key, so the router lets it call the master agent; containing
`master_server_ml` and `master_server_be`, so the router's clean-up broadcast fails the call at
once when either side disconnects.

On the wire this is what `GenAISession.send()` does (same header, same `agent_invoke` frame, the
same reading of `agent_response` / `agent_error`), on one shared aiohttp client instead of a
throw-away library session. Differences, all deliberate: the timeout covers the whole call rather
than each frame; a router error frame without `message_type` (rule 3.3, e.g. mismatched keys)
fails the call at once instead of waiting for the timeout; and a few connections are opened
ahead of time, so the WebSocket handshake with the router is not part of a chat's latency. A
spare that receives anything while idle (a clean-up broadcast, a close) is stale and dropped.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from genai_backend import limits
from genai_backend.config import SETTINGS, Settings
from genai_backend.observability import tracing
from genai_backend.observability.calls import invocation_done
from genai_backend.responses import dumps

log = logging.getLogger(__name__)

MASTER_SERVER_ML = "master_server_ml"
TIMED_OUT = "Request timed out"
CONNECT_TIMEOUT = 10.0
# Detects a router that vanished without closing while a long call is pending.
HEARTBEAT = 30.0
# Answers carry the whole agents trace; the library itself accepts up to 1 MiB, be generous.
MAX_FRAME = 64 * 1024 * 1024
# Connections kept open for the next requests; a burst beyond this connects on demand.
SPARES = 4


class RouterUnreachable(Exception):
    """No connection to the router, or it went away before answering."""


@dataclass(frozen=True)
class Invocation:
    """`genai_session.AgentResponse`, plus when the request left and the answer arrived (perf_counter)."""

    is_success: bool
    execution_time: float
    response: Any
    sent_at: float
    answered_at: float


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def interpret(frame: Any) -> tuple[bool, float, Any] | None:
    """The answer carried by a router frame, or None for frames that are not one."""
    if not isinstance(frame, dict):
        return None
    message_type = frame.get("message_type")
    if message_type == "agent_response":
        return True, _seconds(frame.get("execution_time", 0)), frame.get("response", "")
    error = frame.get("error")
    if message_type == "agent_error" or (message_type is None and isinstance(error, dict) and error):
        message = error.get("error_message", "") if isinstance(error, dict) else ""
        return False, _seconds(frame.get("execution_time", 0)), message
    return None


class InvokerSocket:
    """One router connection with its own identity, for exactly one request.

    Its reader runs from the start: a frame that arrives before the connection is taken makes it
    stale (nothing can be addressed to an identity nobody has used yet, except clean-up notices).
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.taken = False
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @property
    def usable(self) -> bool:
        return not self.ws.closed and not self.reader.done()

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    if not self.taken:
                        break  # stale spare
                    self.frames.put_nowait(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self.frames.put_nowait(None)
            if not self.taken:
                await self.ws.close()

    async def close(self) -> None:
        # The reader ends by itself once the socket is closed.
        await self.ws.close()


class MasterInvoker:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession, spares: int = SPARES) -> None:
        self.settings = settings
        self.http = http
        self.spares: deque[InvokerSocket] = deque()
        self.spare_target = spares
        self._refill: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def invoke(self, payload: dict[str, Any], request_id: uuid.UUID, session_id: uuid.UUID,
                     timeout: float | None = None) -> Invocation:
        """Call the master agent; failures and timeouts come back as unsuccessful Invocations,
        only an unreachable router raises (RouterUnreachable)."""
        with tracing.span("invoke master_server_ml", {"genai.request_id": str(request_id)}, client=True):
            result = await self._invoke(payload, request_id, session_id, timeout)
        invocation_done(result)
        return result

    async def _invoke(self, payload: dict[str, Any], request_id: uuid.UUID, session_id: uuid.UUID,
                      timeout: float | None) -> Invocation:
        timeout = self.settings.master_agent_timeout if timeout is None else timeout
        # The trace context rides in `request_metadata`: genai_session takes request_id and
        # session_id from it and ignores the rest, while every payload key becomes an argument of
        # the master agent's function (an unknown one would make the call fail).
        metadata = tracing.inject({"request_id": str(request_id), "session_id": str(session_id)})
        frame = dumps({"message_type": "agent_invoke", "agent_uuid": MASTER_SERVER_ML, "request_payload": payload,
                       "request_metadata": metadata})
        connection = await self._take()
        try:
            try:
                await connection.ws.send_str(frame)
            except (ConnectionError, RuntimeError) as exc:
                raise RouterUnreachable(f"send failed: {exc!r}") from exc
            sent_at = time.perf_counter()
            try:
                async with asyncio.timeout(timeout if timeout > 0 else None):
                    is_success, execution_time, response = await self._answer(connection)
            except TimeoutError:
                return Invocation(False, 0.0, TIMED_OUT, sent_at, time.perf_counter())
            return Invocation(is_success, execution_time, response, sent_at, time.perf_counter())
        finally:
            # The close handshake is a round trip to the router: not on the answer's way back.
            self._background(connection.close())

    @staticmethod
    async def _answer(connection: InvokerSocket) -> tuple[bool, float, Any]:
        while (data := await connection.frames.get()) is not None:
            try:
                answer = interpret(limits.loads(data))
            except ValueError:
                log.warning("router sent a frame that is not JSON: %.200s", data)
                continue
            if answer is not None:
                return answer
        raise RouterUnreachable(f"router closed the connection before answering (code {connection.ws.close_code})")

    def _background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("invoker background task failed: %r", task.exception())

    async def _take(self) -> InvokerSocket:
        connection = None
        while self.spares and connection is None:
            spare = self.spares.popleft()
            if spare.usable:
                connection = spare
        if self._refill is None or self._refill.done():
            self._refill = self._background(self._fill())
        if connection is None:
            connection = await self._connect()
        connection.taken = True
        return connection

    async def _connect(self) -> InvokerSocket:
        key = f"{self.settings.master_be_api_key}:{uuid.uuid4()}:{MASTER_SERVER_ML}"
        try:
            ws = await self.http.ws_connect(self.settings.router_ws_url, headers={"x-custom-invoke-key": key},
                                            heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise RouterUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return InvokerSocket(ws)

    async def _fill(self) -> None:
        """Top the spares up; a router that cannot be reached is tried again at the next request.
        Bounded, so spares that die as soon as they are opened cannot make it spin."""
        for _ in range(2 * self.spare_target):
            self.spares = deque(spare for spare in self.spares if spare.usable)
            if len(self.spares) >= self.spare_target:
                return
            try:
                self.spares.append(await self._connect())
            except RouterUnreachable as exc:
                log.debug("no spare router connection: %s", exc)
                return

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        # Closes still in flight finish; a refill being cancelled ends with CancelledError.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(spare.close() for spare in self.spares), return_exceptions=True)
        self.spares.clear()


INVOKER = web.AppKey("invoker", MasterInvoker)


async def invoker_ctx(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client for every invocation (connections are per request, the client is shared)."""
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        invoker = MasterInvoker(app[SETTINGS], http)
        app[INVOKER] = invoker
        try:
            yield
        finally:
            await invoker.close()
