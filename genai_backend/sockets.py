"""Open front-end sockets per user, so agent logs reach their owner's sockets only (D05).

The WebSocket view registers into it; the bus pushes through it without importing the api layer.
`push` reaches the user's sockets on every process: through the publisher genai_backend/fanout.py
attaches (a table and NOTIFY), whose listener hands each frame back to `deliver` on every process.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from genai_backend.observability.calls import log_frames
from genai_backend.responses import dumps

log = logging.getLogger(__name__)


# (user id, encoded frame): store the frame for every process's listener.
Publisher = Callable[[uuid.UUID, str], Awaitable[None]]


class SocketRegistry:
    def __init__(self) -> None:
        self._sockets: dict[uuid.UUID, set[web.WebSocketResponse]] = defaultdict(set)
        # Frames to one socket come from several tasks (answers, log pushes): one writer at a time.
        self._locks: dict[web.WebSocketResponse, asyncio.Lock] = {}
        # None (no fan-out running): pushes reach this process's sockets only.
        self.publisher: Publisher | None = None
        self._deliveries: set[asyncio.Task[Any]] = set()

    def add(self, user_id: uuid.UUID, ws: web.WebSocketResponse) -> None:
        self._sockets[user_id].add(ws)
        self._locks[ws] = asyncio.Lock()

    def remove(self, user_id: uuid.UUID, ws: web.WebSocketResponse) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self._sockets[user_id]
        self._locks.pop(ws, None)

    def count(self, user_id: uuid.UUID | None = None) -> int:
        if user_id is None:
            return sum(len(s) for s in self._sockets.values())
        return len(self._sockets.get(user_id, ()))

    def users(self) -> list[uuid.UUID]:
        return list(self._sockets)

    async def send(self, ws: web.WebSocketResponse, payload: Any) -> bool:
        """Send one JSON frame; a closed socket is skipped, never an error."""
        return await self._send_text(ws, dumps(payload))

    async def _send_text(self, ws: web.WebSocketResponse, text: str) -> bool:
        lock = self._locks.get(ws)
        if ws.closed:
            return False
        try:
            if lock is None:
                await ws.send_str(text)
            else:
                async with lock:
                    await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def push(self, user_id: uuid.UUID, payload: Any) -> None:
        """To the user's sockets on every process, in the order of the calls."""
        if self.publisher is None:
            await self.send_to_user(user_id, payload)
        else:
            await self.publisher(user_id, dumps(payload))

    def deliver(self, user_id: uuid.UUID, text: str) -> None:
        """Hand a pushed frame to this process's sockets of the user, without waiting for them.

        A slow browser must hold up no one, so each send is a task; the sends to one socket still
        go out in the order of these calls, because each starts waiting on the socket's lock (FIFO)
        in the order its task was created.
        """
        for ws in self._sockets.get(user_id, ()):
            task = asyncio.create_task(self._send_text(ws, text))
            self._deliveries.add(task)
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[bool]) -> None:
        self._deliveries.discard(task)
        if not task.cancelled() and task.exception() is None:
            log_frames(1 if task.result() else 0, 1)

    async def send_to_user(self, user_id: uuid.UUID, payload: Any) -> int:
        sockets = list(self._sockets.get(user_id, ()))
        sent = await asyncio.gather(*(self.send(ws, payload) for ws in sockets))
        return sum(sent)

    async def close_all(self, code: int = 1001, message: bytes = b"Server shutdown") -> None:
        sockets = [ws for group in self._sockets.values() for ws in group]
        await asyncio.gather(*(ws.close(code=code, message=message) for ws in sockets), return_exceptions=True)


SOCKETS = web.AppKey("sockets", SocketRegistry)
