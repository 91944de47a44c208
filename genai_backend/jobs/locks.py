"""The one rule every periodic job follows: run only while holding its PostgreSQL advisory lock."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from genai_backend.db import queries

# pg_advisory_lock keys, one per job; any constants work as long as every instance uses the same.
REFRESH_LOCK = 0x67656E6169_01
RETENTION_LOCK = 0x67656E6169_02
PRUNE_LOCK = 0x67656E6169_03
PUSHES_LOCK = 0x67656E6169_04
ORPHAN_SWEEP_LOCK = 0x67656E6169_05
RUN_EVENTS_LOCK = 0x67656E6169_09


@asynccontextmanager
async def job_lock(pool: asyncpg.Pool, key: int) -> AsyncIterator[bool]:
    """Yields whether the lock was taken; another instance holding it means: skip this run.

    A session lock on a connection kept for the whole run: if that connection dies, PostgreSQL
    releases the lock by itself.
    """
    async with pool.acquire() as conn:
        if not await queries.try_job_lock(conn, lock_key=key):
            yield False
            return
        try:
            yield True
        finally:
            await queries.release_job_lock(conn, lock_key=key)
