"""Open front-end sockets per user, so agent logs reach their owner's sockets only (D05).

The WebSocket view registers into it; the bus pushes through it without importing the api layer.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from typing import Any

from aiohttp import web

from genai_backend.responses import dumps

log = logging.getLogger(__name__)


class SocketRegistry:
    def __init__(self) -> None:
        self._sockets: dict[uuid.UUID, set[web.WebSocketResponse]] = defaultdict(set)
        # Frames to one socket come from several tasks (answers, log pushes): one writer at a time.
        self._locks: dict[web.WebSocketResponse, asyncio.Lock] = {}

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

    async def send(self, ws: web.WebSocketResponse, payload: Any) -> bool:
        """Send one JSON frame; a closed socket is skipped, never an error."""
        lock = self._locks.get(ws)
        if ws.closed:
            return False
        try:
            if lock is None:
                await ws.send_str(dumps(payload))
            else:
                async with lock:
                    await ws.send_str(dumps(payload))
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def send_to_user(self, user_id: uuid.UUID, payload: Any) -> int:
        sockets = list(self._sockets.get(user_id, ()))
        sent = await asyncio.gather(*(self.send(ws, payload) for ws in sockets))
        return sum(sent)

    async def close_all(self, code: int = 1001, message: bytes = b"Server shutdown") -> None:
        sockets = [ws for group in self._sockets.values() for ws in group]
        await asyncio.gather(*(ws.close(code=code, message=message) for ws in sockets), return_exceptions=True)


SOCKETS = web.AppKey("sockets", SocketRegistry)
