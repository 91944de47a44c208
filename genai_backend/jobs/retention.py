"""Log retention (background-jobs.md §6): delete log rows older than the retention period.

The reference's pg_cron job deletes by a `timestamp` column that does not exist, so it never
deletes anything (D21); this one deletes by `created_at`.
"""
from __future__ import annotations

import logging

import asyncpg

from genai_backend.db import queries

log = logging.getLogger(__name__)

# pg_advisory_lock key of this job (see refresh.REFRESH_LOCK).
RETENTION_LOCK = 0x67656E6169_02
BATCH = 10_000


async def delete_expired_logs(pool: asyncpg.Pool, days: int, batch: int = BATCH) -> int | None:
    """Delete logs older than `days` days; the number deleted, or None when another instance is at it."""
    async with pool.acquire() as conn:
        if not await queries.try_job_lock(conn, lock_key=RETENTION_LOCK):
            log.info("log retention skipped: another instance holds the lock")
            return None
        try:
            total = 0
            while True:
                deleted: int = await queries.delete_expired_logs(conn, days=days, batch=batch)
                total += deleted
                if deleted < batch:
                    break
        finally:
            await queries.release_job_lock(conn, lock_key=RETENTION_LOCK)
    if total:
        log.info("log retention: deleted %d log rows older than %d days", total, days)
    return total
