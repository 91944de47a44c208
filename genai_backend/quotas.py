"""Limits that hold for the whole service: open sockets per user, login and registration attempts.

Their state lives in PostgreSQL (migration 0005), not in process memory, so several processes or
instances on one database enforce one limit. Each check is one round trip.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import ApiError

log = logging.getLogger(__name__)

# Stale login_attempts rows are deleted this often (by every process; it is idempotent).
_PRUNE_EVERY = 60.0


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after)))})


def client_address(request: web.Request) -> str:
    """The peer address as a throttling key; an IPv6 client is counted by its /64 (one subscriber)."""
    raw = request.remote or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Blocks:
    """Keys this process has seen over their limit, until their window ends.

    The database decides; this only remembers its answer, so a flood of refused attempts costs
    no query (and no wait for a pool connection that legitimate requests need) once it is refused.
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._until: dict[tuple[str, str], float] = {}

    def remaining(self, *keys: tuple[str, str]) -> float:
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            until = self._until.get(key)
            if until is not None:
                if until <= now:
                    del self._until[key]
                else:
                    wait = max(wait, until - now)
        return wait

    def block(self, key: tuple[str, str], seconds: float) -> None:
        if len(self._until) >= self.max_size:
            self._until.clear()
        self._until[key] = time.monotonic() + seconds


BLOCKS = web.AppKey("blocks", Blocks)


class SocketSlots:
    """This process's share of the socket_slots table: the slots it holds, kept fresh by heartbeat."""

    def __init__(self) -> None:
        self.owner = uuid.uuid4()
        self.held: dict[uuid.UUID, uuid.UUID] = {}  # slot id -> user id

    def hold(self, slot_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.held[slot_id] = user_id

    async def release(self, app: web.Application, slot_id: uuid.UUID) -> None:
        if self.held.pop(slot_id, None) is None:
            return
        try:
            await queries.release_socket_slot(app[POOL], slot_id=slot_id)
        except Exception as exc:  # noqa: BLE001 - the slot goes stale by itself within the TTL
            log.warning("could not release socket slot %s: %r", slot_id, exc)

    async def refresh(self, app: web.Application) -> None:
        if not self.held:
            return
        slots = list(self.held.items())
        await queries.refresh_socket_slots(app[POOL], slot_ids=[s for s, _ in slots],
                                           user_ids=[u for _, u in slots], owner=self.owner)


SOCKET_SLOTS = web.AppKey("socket_slots", SocketSlots)


async def _keep_fresh(app: web.Application) -> None:
    settings = app[SETTINGS]
    # Four beats per TTL: a slot survives three missed ones (a busy pool, a slow database).
    interval = max(0.2, settings.socket_slot_ttl / 4)
    loop = asyncio.get_running_loop()
    next_prune = loop.time() + _PRUNE_EVERY
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(app[SOCKET_SLOTS].refresh(app), timeout=interval * 2)
            if loop.time() >= next_prune:
                next_prune = loop.time() + _PRUNE_EVERY
                window = max(settings.login_throttle_window, settings.register_throttle_window)
                await queries.prune_login_attempts(app[POOL], window_seconds=window)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a database outage: beat again next time
            log.warning("socket slot heartbeat failed: %r", exc)


async def quotas_ctx(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat of this process's socket slots (after the pool opens, before it closes)."""
    task = asyncio.create_task(_keep_fresh(app), name="socket-slot-heartbeat")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    slots = app[SOCKET_SLOTS]
    slots.held.clear()
    with suppress(Exception):
        await asyncio.wait_for(queries.release_socket_slots_of_owner(app[POOL], owner=slots.owner), timeout=5)


async def take_socket_slot(request: web.Request, user_id: uuid.UUID,
                           session_id: uuid.UUID) -> tuple[bool, bool, uuid.UUID | None]:
    """The handshake's checks and a slot: (user exists, session is foreign, slot id or None if full)."""
    settings = request.app[SETTINGS]
    slot_id = uuid.uuid4()
    # 0 = no cap: a limit no one can reach, so the query stays the same.
    cap = settings.max_sockets_per_user or 2**31 - 1
    row = await queries.open_chat_socket(request.app[POOL], user_id=user_id, session_id=session_id, slot_id=slot_id,
                                         owner=request.app[SOCKET_SLOTS].owner, max_sockets=cap,
                                         ttl_seconds=settings.socket_slot_ttl)
    if row["slot"]:
        request.app[SOCKET_SLOTS].hold(slot_id, user_id)
        return row["user_exists"], row["foreign_session"], slot_id
    return row["user_exists"], row["foreign_session"], None


def too_many_sockets(settings_cap: int, ttl: float) -> TooManyRequests:
    return TooManyRequests(f"Too many open sockets: at most {settings_cap} per user", ttl)
