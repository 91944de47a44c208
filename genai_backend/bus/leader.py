"""Which process holds the service's one router session: a PostgreSQL session-level advisory lock.

The lock lives on a connection of its own, outside the pool, so no request ever holds or loses it.
Processes without it try again every `RETRY` seconds; PostgreSQL releases it the moment the
leader's connection ends (a killed process, a restarted server), so a takeover costs at most one
retry plus the router connect. The leader watches its lock connection (termination callback, and
a ping every `CHECK` seconds answered within `CHECK_TIMEOUT`) and, when it is gone, drops the
router session before anything else: another process may hold the lock a moment later, and two
`master_server_be` connections would replace each other at the router.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import asyncpg

from genai_backend.bus import Leadership
from genai_backend.db import DATABASE_ERRORS

log = logging.getLogger(__name__)

# Any constant works as long as every process uses the same one; distinct from the jobs' keys.
LEADER_LOCK = 0x67656E6169_10
# Non-leaders' retry period; the takeover bound (2 s) is this plus one connect.
RETRY = 0.5
CHECK = 0.25
CHECK_TIMEOUT = 0.5
# A deposed leader notices within CHECK + CHECK_TIMEOUT and drops its router session at once;
# the new one waits this long before connecting, so two router sessions never overlap.
TAKEOVER_GRACE = 1.0
CONNECT_TIMEOUT = 5.0
# Between attempts to reach a database that is down.
RECONNECT = 0.5


class Election:
    """Campaigns forever: win the lock, run `on_elected`, and `on_deposed` when the lock is lost."""

    def __init__(self, dsn: str, status: Leadership, on_elected: Callable[[], None],
                 on_deposed: Callable[[], Awaitable[None]]) -> None:
        self.dsn = dsn
        self.status = status
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._campaign(), name="leader election")

    async def stop(self) -> None:
        """Resign (the router session first, then the lock) and stop campaigning."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _campaign(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT,
                                             server_settings={"application_name": "genai-backend leader"})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await self._wait_for_lock(conn)
                await self._lead(conn, lost)
            except DATABASE_ERRORS as exc:
                log.warning("leader election: database unreachable (%s); retrying", type(exc).__name__)
            finally:
                if conn is not None:
                    # The lock goes with the connection; never wait on a server that may be gone.
                    conn.terminate()
            await asyncio.sleep(RECONNECT)

    async def _wait_for_lock(self, conn: asyncpg.Connection) -> None:
        while True:
            async with asyncio.timeout(CHECK_TIMEOUT):
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                    return
            await asyncio.sleep(RETRY)

    async def _lead(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        with suppress(TimeoutError):
            async with asyncio.timeout(TAKEOVER_GRACE):
                await lost.wait()
        if lost.is_set() or conn.is_closed():
            raise ConnectionError("lock connection closed")
        self.status.set(True)
        log.info("this process leads: it holds the router session")
        try:
            self.on_elected()
            while True:
                with suppress(TimeoutError):
                    async with asyncio.timeout(CHECK):
                        await lost.wait()
                if lost.is_set() or conn.is_closed():
                    raise ConnectionError("lock connection closed")
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await conn.fetchval("SELECT 1")
        except DATABASE_ERRORS:
            log.warning("lost the leader lock's connection: dropping the router session")
            raise
        finally:
            # Runs on cancellation (shutdown) too: the router session goes before the lock does.
            self.status.set(False)
            await self.on_deposed()
