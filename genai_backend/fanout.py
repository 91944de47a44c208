"""Pushes to a user's sockets on every process: a row in `pushes`, its id by NOTIFY, a listener per process.

A NOTIFY payload is limited to 8000 bytes, so it carries only the id; the frame stays in the table.
Each process listens on a connection of its own (outside the pool) and reads the rows after the
last id it saw, in id order, which is commit order (sql/pushes.sql) and so the order of the
pushes. When the connection drops (a database restart) it reconnects and reads what was stored
meanwhile, so no frame is lost while the listener was away; rows older than the retention are
pruned by a job (genai_backend/jobs/).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import asyncpg
from aiohttp import web

from genai_backend.db import DATABASE_ERRORS, DSN, POOL, queries
from genai_backend.sockets import SOCKETS, SocketRegistry

log = logging.getLogger(__name__)

CHANNEL = "genai_pushes"
BATCH = 500
# A missed notification (or a silently dead connection) costs at most this long.
POLL = 5.0
QUERY_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
RECONNECT_INITIAL = 0.1
RECONNECT_MAX = 2.0
# How long start-up waits for the listener before serving anyway (it keeps trying).
START_WAIT = 5.0


class FanOut:
    """The publisher of the socket registry, and this process's listener."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, sockets: SocketRegistry) -> None:
        self.dsn = dsn
        self.pool = pool
        self.sockets = sockets
        self.last_id: int | None = None
        self.listening = asyncio.Event()
        self.reconnects = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def publish(self, user_id: uuid.UUID, frame: str) -> None:
        await queries.create_push(self.pool, user_id=user_id, frame=frame)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="push listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _listen_forever(self) -> None:
        delay = RECONNECT_INITIAL
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": "genai-backend listener"})
                conn.add_termination_listener(self._notified)
                await conn.add_listener(CHANNEL, self._notified)
                await self._catch_up_start(conn)
                self.listening.set()
                delay = RECONNECT_INITIAL
                await self._pump(conn)
            except DATABASE_ERRORS as exc:
                if self.listening.is_set():
                    log.warning("push listener lost its database connection (%s); reconnecting", type(exc).__name__)
            finally:
                self.listening.clear()
                if conn is not None:
                    conn.terminate()
            self.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _catch_up_start(self, conn: asyncpg.Connection) -> None:
        async with asyncio.timeout(QUERY_TIMEOUT):
            newest: int = await queries.get_last_push_id(conn)
        if self.last_id is None:
            # Sockets opened after start-up get the pushes made after it, as with one process.
            self.last_id = newest
        elif newest < self.last_id:
            log.warning("pushes restarted from id %d (was %d): the table was emptied or restored", newest,
                        self.last_id)
            self.last_id = newest
        # Whatever was stored while we were away, before waiting for the next notification.
        self._wake.set()

    async def _pump(self, conn: asyncpg.Connection) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._wake.wait()
            self._wake.clear()
            if conn.is_closed():
                raise ConnectionError("listener connection closed")
            await self._drain(conn)

    async def _drain(self, conn: asyncpg.Connection) -> None:
        assert self.last_id is not None
        while True:
            async with asyncio.timeout(QUERY_TIMEOUT):
                rows = [r async for r in queries.list_pushes_after(conn, after_id=self.last_id, batch=BATCH)]
            for row in rows:
                self.last_id = row["id"]
                self.sockets.deliver(row["user_id"], row["frame"])
            if len(rows) < BATCH:
                return


FANOUT = web.AppKey("fanout", FanOut)


async def fanout_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the database (it needs the pool and the DSN); pushes go through it from here on."""
    fanout = FanOut(app[DSN], app[POOL], app[SOCKETS])
    app[FANOUT] = fanout
    fanout.start()
    with suppress(TimeoutError):
        async with asyncio.timeout(START_WAIT):
            await fanout.listening.wait()
    app[SOCKETS].publisher = fanout.publish
    try:
        yield
    finally:
        app[SOCKETS].publisher = None
        await fanout.stop()
