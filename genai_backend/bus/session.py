"""The back-end's own connection to the router (client id `master_server_be`), supervised.

A small own client instead of `GenAISession.process_events`, which never returns when the socket
drops (agent-bus.md §7, D22). On the wire it is the same: header `API-KEY`, one `agent_register`
frame (the router drops it), then `{"request_payload": {...}}` frames in. Unlike the library it
answers nothing: the library's `agent_response` replies carry `invoked_by: ""` and the router
drops them anyway.

Only the process elected by bus/leader.py connects, so the service has one such connection.
Whenever the connection fails or drops, it reconnects forever with capped exponential back-off
and jitter, logging each failure; start-up never waits for it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import suppress
from typing import Any

import aiohttp
from aiohttp import web

from genai_backend.bus import LEADERSHIP, ROUTER_STATUS, Leadership, RouterStatus
from genai_backend.bus.handlers import Bus, dispatch
from genai_backend.bus.leader import Election
from genai_backend.config import SETTINGS, Settings
from genai_backend.db import DSN, POOL, queries
from genai_backend.observability import metrics
from genai_backend.responses import dumps
from genai_backend.sockets import SOCKETS

log = logging.getLogger(__name__)

# The library's first frame; the router ignores registrations from the master servers.
REGISTER_FRAME = dumps({"message_type": "agent_register", "request_payload": {
    "agent_name": "master_server_be", "agent_description": "GenAI back-end", "agent_input_schema": {}}})
# Pings detect a router that vanished without closing (half-open TCP).
HEARTBEAT = 20.0
CONNECT_TIMEOUT = 10.0
# Agent announcements may be large (schemas); a frame over this kills the connection, so be generous.
MAX_FRAME = 16 * 1024 * 1024
# Notices to bad agents: the reference waits 1 s for an answer that never comes; we wait for nothing.
NOTICE_TIMEOUT = 5.0
MAX_NOTICES = 8
# How long shutdown waits for the event being handled (handlers take milliseconds).
STOP_GRACE = 5.0


class RouterSession:
    """Owns the connection task, the HTTP client it uses, and the little tasks handlers spawn."""

    def __init__(self, settings: Settings, status: RouterStatus) -> None:
        self.settings = settings
        self.status = status
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._bus: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self._current: asyncio.Future[None] | None = None
        # A flood of bad registrations must not turn into a flood of sockets.
        self._notices = asyncio.Semaphore(MAX_NOTICES)
        self.connections = 0  # successful connects, ever (tests, metrics)
        self.connected = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, bus_pool: Any, sockets: Any) -> None:
        """Get ready to lead; the connection is opened by `lead`, once this process is elected."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT))
        self._bus = Bus(pool=bus_pool, settings=self.settings, sockets=sockets, notify=self.notify,
                        spawn=self.spawn)
        self.status.set("standby")

    def lead(self) -> None:
        metrics.set_router_leader(True)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(self._bus), name="router session")

    async def resign(self) -> None:
        """Drop the router connection now (another process is about to lead)."""
        metrics.set_router_leader(False)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
        # The event being handled finishes before the lock is let go: the next leader marks every
        # agent inactive first, and a registration committed after that would be a stale one.
        current, self._current = self._current, None
        if current is not None:
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(current), STOP_GRACE)
        self.connected.clear()
        self.status.set("standby")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await task
        # An event being handled is let finish (it is shielded from the cancel above): cut short,
        # it could leave its pool connection mid-transaction while the pool shuts down.
        if self._current is not None:
            with suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._current, STOP_GRACE)
        if self._http is not None:
            await self._http.close()
        self.status.set("disabled")

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("router background task failed", exc_info=task.exception())

    # --- the connection ------------------------------------------------------------------------

    async def _supervise(self, bus: Bus) -> None:
        initial, cap = self.settings.router_backoff_initial, self.settings.router_backoff_max
        delay = initial
        loop = asyncio.get_running_loop()
        while True:
            self.status.set("connecting", self.status.last_error)
            started = loop.time()
            try:
                error = await self._connect_once(bus)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except Exception as exc:
                # Whatever happens, the supervisor lives on: a dead one would leave us deaf (D22).
                log.exception("router session failed")
                error = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            # A connection that lived a while was a success: start the back-off afresh.
            if self.status.state == "connected" and loop.time() - started >= max(1.0, cap / 10):
                delay = initial
            self.status.set("disconnected", error)
            # Jitter keeps many back-ends from reconnecting to a restarted router in lockstep.
            wait = random.uniform(delay / 2, delay)
            log.warning("router %s: %s; reconnecting in %.2f s", self.settings.router_ws_url, error, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, cap)

    async def _connect_once(self, bus: Bus) -> str:
        """One connection's life; returns why it ended."""
        assert self._http is not None
        headers = {"API-KEY": self.settings.master_be_api_key}
        async with self._http.ws_connect(self.settings.router_ws_url, headers=headers, heartbeat=HEARTBEAT,
                                         max_msg_size=MAX_FRAME) as ws:
            await ws.send_str(REGISTER_FRAME)
            self.connections += 1
            if self.connections > 1:
                metrics.ROUTER_RECONNECTS.inc()
            await self._forget_registrations(bus)
            self.status.set("connected")
            self.connected.set()
            log.info("connected to the router at %s", self.settings.router_ws_url)
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    # In order: an agent's register must be applied before its unregister.
                    self._current = asyncio.ensure_future(dispatch(bus, msg.data))
                    await asyncio.shield(self._current)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    return f"connection error: {ws.exception()!r}"
            return f"connection closed by the router (code {ws.close_code})"

    async def _forget_registrations(self, bus: Bus) -> None:
        """On every connect nobody knows who is connected: this process just started leading (the
        previous leader's registrations may be stale), or the router restarted and every agent
        lost its socket, and the router replays nothing. As at start-up (agent-bus.md §7), every
        agent is inactive until it registers again. Frames are read only after this, so a
        registration arriving right away is never overwritten."""
        try:
            await queries.mark_all_agents_inactive(bus.pool)
            log.info("connected to the router: agents count as inactive until they register again")
        except Exception:
            log.exception("could not mark agents inactive after a reconnect")

    # --- notices to agents ---------------------------------------------------------------------

    def notify(self, agent_uuid: str, message: str) -> None:
        self.spawn(self._send_notice(agent_uuid, message))

    async def _send_notice(self, agent_uuid: str, message: str) -> None:
        """Tell an agent to go away: an `agent_invoke` whose payload carries `error_message`, sent
        from an identity that starts with the back-end key (router rule 3.4). The agent's library
        raises and exits. A fresh identity per notice, so concurrent notices never replace each
        other's socket in the router's map."""
        assert self._http is not None
        key = f"{self.settings.master_be_api_key}:{uuid.uuid4()}"
        frame = {"message_type": "agent_invoke", "agent_uuid": agent_uuid,
                 "request_payload": {"error_message": message, "error_type": "AgentGeneralError"},
                 "request_metadata": {"request_id": "", "session_id": ""}}
        try:
            async with self._notices, asyncio.timeout(NOTICE_TIMEOUT):
                async with self._http.ws_connect(self.settings.router_ws_url,
                                                 headers={"x-custom-invoke-key": key}) as ws:
                    await ws.send_str(dumps(frame))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("could not tell agent %s to go away: %r", agent_uuid, exc)


ROUTER = web.AppKey("router", RouterSession)


async def router_ctx(app: web.Application) -> AsyncIterator[None]:
    """Campaign for the router session after the database (it needs the pool); never wait for the
    election or the router."""
    settings = app[SETTINGS]
    status = RouterStatus()
    app[ROUTER_STATUS] = status
    leadership = Leadership()
    app[LEADERSHIP] = leadership
    if not settings.start_router:
        yield
        return
    session = RouterSession(settings, status)
    app[ROUTER] = session
    session.start(app[POOL], app[SOCKETS])
    election = Election(app[DSN], leadership, session.lead, session.resign)
    election.start()
    try:
        yield
    finally:
        await election.stop()
        await session.stop()
