"""Retention: log rows older than the retention period (background-jobs.md §6), catalogue change
records older than any cached answer, and pushed socket frames older than any listener's gap.

The reference's pg_cron job deletes logs by a `timestamp` column that does not exist, so it never
deletes anything (D21); this one deletes by `created_at`.
"""
from __future__ import annotations

import logging

import asyncpg

from genai_backend.catalogues import MAX_AGE
from genai_backend.db import queries
from genai_backend.jobs.locks import PRUNE_LOCK, PUSHES_LOCK, RETENTION_LOCK, RUN_EVENTS_LOCK, job_lock

log = logging.getLogger(__name__)

BATCH = 10_000


async def delete_expired_logs(pool: asyncpg.Pool, days: int, batch: int = BATCH) -> int | None:
    """Delete logs older than `days` days; the number deleted, or None when another instance is at it."""
    async with job_lock(pool, RETENTION_LOCK) as locked:
        if not locked:
            log.info("log retention skipped: another instance holds the lock")
            return None
        total = 0
        while True:
            deleted: int = await queries.delete_expired_logs(pool, days=days, batch=batch)
            total += deleted
            if deleted < batch:
                break
    if total:
        log.info("log retention: deleted %d log rows older than %d days", total, days)
    return total


async def prune_catalogue_changes(pool: asyncpg.Pool) -> int | None:
    """Delete change records no cached answer can predate; None when another instance is at it."""
    async with job_lock(pool, PRUNE_LOCK) as locked:
        if not locked:
            return None
        deleted: int = await queries.prune_catalogue_changes(pool, older_than_seconds=2 * MAX_AGE)
        return deleted


# A listener away longer than this (a database outage) replays nothing older; frames for a socket
# are worth little after that long anyway.
PUSH_RETENTION = 15 * 60.0


async def prune_pushes(pool: asyncpg.Pool, older_than: float = PUSH_RETENTION) -> int | None:
    """Delete pushed frames older than `older_than` seconds; None when another instance is at it."""
    async with job_lock(pool, PUSHES_LOCK) as locked:
        if not locked:
            return None
        deleted: int = await queries.prune_pushes(pool, older_than_seconds=older_than)
        return deleted


# A run's events serve streams and resumption; a day after it ended nobody resumes it. The run
# itself (state, answer, idempotency) stays.
RUN_EVENT_RETENTION = 24 * 3600.0


# Beyond the master-agent timeout: a run still running after that lost its process.
ABANDONED_MARGIN = 300.0
ABANDONED = '{"detail": "Unexpected error occured. Try again later", "reason": "abandoned"}'


async def prune_run_events(pool: asyncpg.Pool, older_than: float = RUN_EVENT_RETENTION,
                           abandoned_after: float | None = None) -> int | None:
    """Delete the events of runs that ended over `older_than` seconds ago, after ending the runs
    older than `abandoned_after` seconds that are still running; None when another instance is at it."""
    async with job_lock(pool, RUN_EVENTS_LOCK) as locked:
        if not locked:
            return None
        if abandoned_after is not None:
            failed: int = await queries.fail_abandoned_runs(pool, older_than_seconds=abandoned_after, data=ABANDONED)
            if failed:
                log.warning("ended %d abandoned runs as failed", failed)
        deleted: int = await queries.prune_run_events(pool, older_than_seconds=older_than)
        return deleted
