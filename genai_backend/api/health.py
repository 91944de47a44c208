"""Liveness and readiness probes (not in the reference), and the root redirect."""
from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from aiohttp_apigami import docs

from genai_backend.bus import LEADERSHIP, ROUTER_STATUS, Leadership, RouterStatus
from genai_backend.db import POOL
from genai_backend.responses import json_response


class RootView(web.View):
    URL_PATH = "/"

    async def get(self) -> web.Response:
        return web.Response(status=307, headers={"Location": "/docs"})


class HealthView(web.View):
    URL_PATH = "/health"

    @docs(tags=["health"], summary="The process is alive", responses={200: {"description": "Alive"}})
    async def get(self) -> web.Response:
        return json_response({"status": "ok"})


class ReadyView(web.View):
    URL_PATH = "/ready"

    @docs(tags=["health"], summary="Ready: 200 when the database answers; reports the router too",
          responses={200: {"description": "Ready"}, 503: {"description": "Database unavailable"}})
    async def get(self) -> web.Response:
        database = "ok"
        pool = self.request.app.get(POOL)
        try:
            if pool is None:
                raise ConnectionError("no pool")
            async with asyncio.timeout(2):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
            database = "unavailable"
        router = self.request.app.get(ROUTER_STATUS) or RouterStatus()
        leadership = self.request.app.get(LEADERSHIP) or Leadership()
        # `leader`: whether this process holds the service's router session; the others are on
        # `standby` and take over when it goes.
        body = {"status": "ready" if database == "ok" else "not ready", "database": database,
                "leader": leadership.leading, "router": {"state": router.state, "error": router.last_error}}
        return json_response(body, status=200 if database == "ok" else 503)


VIEWS = (RootView, HealthView, ReadyView)
