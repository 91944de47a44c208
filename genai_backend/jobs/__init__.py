"""Periodic work inside the service (no Celery, no Redis, no pg_cron): tool refresh, log retention,
and pruning of the catalogue change records and of the pushed socket frames."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

from aiohttp import web

from genai_backend.catalogues import MAX_AGE
from genai_backend.config import SETTINGS
from genai_backend.db import POOL
from genai_backend.discovery.client import DISCOVERY
from genai_backend.jobs.refresh import refresh_tools
from genai_backend.jobs.retention import (
    ABANDONED_MARGIN,
    delete_expired_logs,
    prune_catalogue_changes,
    prune_pushes,
    prune_run_events,
)
from genai_backend.observability import metrics

log = logging.getLogger(__name__)

# Floor for CELERY_BEAT_INTERVAL_MINUTES: 0 must not turn the refresh into a busy loop.
MIN_REFRESH_PERIOD = 1.0
# background-jobs.md §6: once shortly after start-up, then hourly.
RETENTION_FIRST_DELAY = 60.0
RETENTION_PERIOD = 3600.0
PUSH_PRUNE_PERIOD = 60.0
RUN_PRUNE_PERIOD = 600.0


async def run_periodically(name: str, job: Callable[[], Awaitable[object]], *, first_delay: float,
                           period: float) -> None:
    """Run `job` after `first_delay`, then `period` seconds after each run ENDS (runs never overlap).

    A run that raises is logged and the next one comes at the usual time; only cancellation ends the loop.
    """
    delay = first_delay
    while True:
        await asyncio.sleep(delay)
        delay = period
        try:
            await metrics.timed_job(name.replace(" ", "_"), job)
        except Exception:
            log.exception("%s failed; next try in %g s", name, period)


async def jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the periodic jobs (unless START_JOBS is off, as in most tests); cancel them on shutdown."""
    settings = app[SETTINGS]
    tasks: list[asyncio.Task[None]] = []
    if settings.start_jobs:
        pool, discovery = app[POOL], app[DISCOVERY]
        period = max(settings.refresh_interval_minutes * 60, MIN_REFRESH_PERIOD)

        async def refresh() -> None:
            await refresh_tools(pool, discovery, settings.tool_refresh_timeout, secret_keys=settings.secret_keys)

        async def retention() -> None:
            await delete_expired_logs(pool, settings.log_retention_days)

        # background-jobs.md §2: the first refresh one period after start-up, not immediately.
        tasks.append(asyncio.create_task(
            run_periodically("tool refresh", refresh, first_delay=period, period=period), name="tool refresh"))
        tasks.append(asyncio.create_task(
            run_periodically("catalogue change pruning", lambda: prune_catalogue_changes(pool), first_delay=MAX_AGE,
                             period=MAX_AGE), name="catalogue change pruning"))
        tasks.append(asyncio.create_task(
            run_periodically("push pruning", lambda: prune_pushes(pool), first_delay=PUSH_PRUNE_PERIOD,
                             period=PUSH_PRUNE_PERIOD), name="push pruning"))
        # No master-agent timeout (0): a run may legitimately run for ever, none is abandoned.
        timeout = settings.master_agent_timeout
        abandoned = timeout + ABANDONED_MARGIN if timeout > 0 else None
        tasks.append(asyncio.create_task(
            run_periodically("run event pruning", lambda: prune_run_events(pool, abandoned_after=abandoned),
                             first_delay=RUN_PRUNE_PERIOD,
                             period=RUN_PRUNE_PERIOD), name="run event pruning"))
        if settings.log_retention_days > 0:  # 0 keeps logs forever
            tasks.append(asyncio.create_task(
                run_periodically("log retention", retention, first_delay=RETENTION_FIRST_DELAY,
                                 period=RETENTION_PERIOD), name="log retention"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
