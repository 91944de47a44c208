"""Periodic MCP/A2A refresh (background-jobs.md §2): look every distinct URL up, write only what changed.

One slow server never delays the others: lookups run concurrently (at most CONCURRENCY at a time),
each within its own timeout, and the failure of one URL is logged and never aborts the cycle (D18).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from genai_backend.auth import secrets
from genai_backend.db import queries
from genai_backend.discovery.a2a import CardUnavailable
from genai_backend.discovery.client import Discovery
from genai_backend.discovery.mcp import McpTool, McpUnavailable
from genai_backend.flows_state import reevaluate_flows
from genai_backend.jobs.locks import REFRESH_LOCK, job_lock
from genai_backend.schemas.mcp_servers import open_headers, tool_rows

log = logging.getLogger(__name__)

CONCURRENCY = 10


@dataclass
class RefreshReport:
    """What one cycle did; `skipped` when another instance held the lock."""

    skipped: bool = False
    reachable: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    changed_owners: set[uuid.UUID] = field(default_factory=set)
    seconds: float = 0.0


async def refresh_tools(pool: asyncpg.Pool, discovery: Discovery, timeout: float,
                        concurrency: int = CONCURRENCY, secret_keys: Sequence[str] = ()) -> RefreshReport:
    """One refresh cycle, unless another instance is running one (then it is skipped, not queued).

    `secret_keys` (current first) decrypt the MCP servers' stored headers.
    """
    started = time.perf_counter()
    async with job_lock(pool, REFRESH_LOCK) as locked:
        if not locked:
            log.info("tool refresh skipped: another instance holds the lock")
            return RefreshReport(skipped=True)
        report = await _refresh(pool, discovery, timeout, asyncio.Semaphore(concurrency), tuple(secret_keys))
    report.seconds = time.perf_counter() - started
    log.info("tool refresh: %d reachable, %d unreachable, %d failed, flows of %d owners re-evaluated in %.2f s",
             len(report.reachable), len(report.unreachable), len(report.failed), len(report.changed_owners),
             report.seconds)
    return report


async def _refresh(pool: asyncpg.Pool, discovery: Discovery, timeout: float,
                   limit: asyncio.Semaphore, keys: tuple[str, ...]) -> RefreshReport:
    mcp = [(row["server_url"], row["headers"]) async for row in queries.list_mcp_server_urls(pool)]
    mcp_urls = [url for url, _ in mcp]
    card_urls = [row["server_url"] async for row in queries.list_a2a_card_urls(pool)]
    lookups: list[Awaitable[tuple[bool, set[uuid.UUID]]]] = [
        *(_refresh_mcp_url(pool, discovery, url, headers, keys, timeout, limit) for url, headers in mcp),
        *(_refresh_card_url(pool, discovery, url, timeout, limit) for url in card_urls)]
    results = await asyncio.gather(*lookups, return_exceptions=True)
    report = RefreshReport()
    for url, result in zip([*mcp_urls, *card_urls], results):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            log.error("tool refresh of %s failed", url, exc_info=result)
            report.failed.append(url)
            continue
        reachable, owners = result
        (report.reachable if reachable else report.unreachable).append(url)
        report.changed_owners |= owners
    for owner in report.changed_owners:
        await reevaluate_flows(pool, owner)
    return report


async def _refresh_mcp_url(pool: asyncpg.Pool, discovery: Discovery, url: str, sealed: str | None,
                           keys: tuple[str, ...], timeout: float,
                           limit: asyncio.Semaphore) -> tuple[bool, set[uuid.UUID]]:
    """Update every server row with this URL and these stored headers (all users, D19); return
    reachability and changed owners. A down server keeps the reason, e.g. its 401."""
    tools: list[McpTool] | None = None
    reason: str | None = None
    async with limit:
        try:
            headers = await open_headers(sealed, keys)
            tools = await discovery.tools(url, timeout, headers)
        except secrets.InvalidCiphertext:
            reason = "the stored headers cannot be decrypted with the configured SECRET_KEY(s)"
        except McpUnavailable as exc:
            reason = str(exc)
        if reason is not None:
            log.info("MCP server %s is down: %s", url, reason)
    async with pool.acquire() as conn, conn.transaction():
        servers = [row async for row in queries.lock_mcp_servers_by_url(conn, server_url=url, headers=sealed)]
        changed = queries.set_mcp_servers_active_by_url(
            conn, server_url=url, headers=sealed, is_active=tools is not None, reason=reason)
        owners = {row["creator_id"] async for row in changed if row["flipped"]}
        if tools is not None:
            for server in servers:
                if await queries.sync_mcp_tools(conn, server_id=server["id"], tools=tool_rows(tools)):
                    owners.add(server["creator_id"])
    return tools is not None, owners


async def _refresh_card_url(pool: asyncpg.Pool, discovery: Discovery, url: str, timeout: float,
                            limit: asyncio.Semaphore) -> tuple[bool, set[uuid.UUID]]:
    """Update every card row of this origin; unreachable, non-200 and invalid cards all mean inactive."""
    card: dict[str, Any] | None
    async with limit:
        try:
            card = await discovery.card(url, timeout)
        except CardUnavailable as exc:
            log.info("A2A card of %s is unavailable: %s", url, exc)
            card = None
    if card is None:
        rows = queries.deactivate_a2a_cards_by_url(pool, server_url=url)
    else:
        rows = queries.refresh_a2a_cards_by_url(
            pool, server_url=url, description=card["description"], card_content=card["card_content"],
            endpoint_url=card["endpoint_url"], protocol_version=card["protocol_version"], transport=card["transport"])
    return card is not None, {row["creator_id"] async for row in rows}
