"""create_app(settings): wiring only; every resource opens in a cleanup_ctx."""
from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from aiohttp import web

from genai_backend.answers import ANSWERS, Answers
from genai_backend.api import (
    a2a_agents,
    agents,
    chats,
    files,
    flows,
    health,
    keys,
    llm,
    logs,
    mcp_servers,
    openai_compat,
    profiles,
    runs,
    users,
    ws,
)
from genai_backend.auth.middleware import KNOWN_USERS, KnownUsers, auth_middleware
from genai_backend.auth.passwords import set_queue_limit
from genai_backend.auth.rotation import check_keys_ctx
from genai_backend.bus.invoke import invoker_ctx
from genai_backend.bus.session import router_ctx
from genai_backend.catalogues import CATALOGUES, Catalogues
from genai_backend.config import SETTINGS, Settings
from genai_backend.cors import add_cors_headers, cors_middleware
from genai_backend.db import database_ctx
from genai_backend.discovery.client import discovery_ctx
from genai_backend.errors import error_middleware
from genai_backend.fanout import fanout_ctx
from genai_backend.jobs import jobs_ctx
from genai_backend.limits import MAX_JSON_BODY
from genai_backend.observability.http import observability_ctx, observe_middleware, setup_observability
from genai_backend.openapi import setup_openapi
from genai_backend.protocol import HANDLER_ARGS
from genai_backend.quotas import BLOCKS, SOCKET_SLOTS, Blocks, SocketSlots, quotas_ctx
from genai_backend.runs import runs_ctx
from genai_backend.sockets import SOCKETS, SocketRegistry
from genai_backend.storage import files_ctx
from genai_backend.validation import validation_middleware

API_MODULES: tuple[ModuleType, ...] = (health, users, profiles, agents, flows, logs, llm, chats, files, ws,
                                      mcp_servers, a2a_agents, keys, runs, openai_compat)



def _add_views(app: web.Application, modules: Iterable[ModuleType]) -> None:
    for module in modules:
        for view in module.VIEWS:
            app.router.add_view(view.URL_PATH, view)


def _add_other_slash_spelling(app: web.Application) -> None:
    """Serve `/x` and `/x/` alike, directly: consumers use both (README §Global conventions)."""
    added: set[tuple[str, str]] = set()
    for route in list(app.router.routes()):
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or path == "/" or "directory" in info:
            continue
        other = path[:-1] if path.endswith("/") else path + "/"
        # A path served twice (/openapi.json: ours, then apigami's unreached one) gets one twin.
        if (route.method, other) in added:
            continue
        added.add((route.method, other))
        app.router.add_route(route.method, other, route.handler)


async def _close_sockets(app: web.Application) -> None:
    # Before cleanup_ctx tears the pool down: no view may be mid-query on a dying pool.
    await app[SOCKETS].close_all()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware(settings), cors_middleware, error_middleware, auth_middleware,
                     validation_middleware],
        client_max_size=MAX_JSON_BODY,
        handler_args=HANDLER_ARGS,
    )
    app[SETTINGS] = settings
    set_queue_limit(settings.password_queue_max)
    app[SOCKETS] = SocketRegistry()
    app[ANSWERS] = Answers()
    app[CATALOGUES] = Catalogues(app[ANSWERS])
    app[KNOWN_USERS] = KnownUsers()
    app[SOCKET_SLOTS] = SocketSlots()
    app[BLOCKS] = Blocks()
    app.on_shutdown.append(_close_sockets)
    # First: tracing is on before the pool opens its connections, and flushed after everything.
    app.cleanup_ctx.append(observability_ctx)
    app.cleanup_ctx.append(database_ctx)
    # Before anything uses a stored secret: a wrong SECRET_KEY_PREVIOUS stops the start.
    app.cleanup_ctx.append(check_keys_ctx)
    # Before the router session, whose log pushes go through it.
    app.cleanup_ctx.append(fanout_ctx)
    app.cleanup_ctx.append(quotas_ctx)
    app.cleanup_ctx.append(router_ctx)
    app.cleanup_ctx.append(files_ctx)
    app.cleanup_ctx.append(invoker_ctx)
    # Stopped before the invoker: runs in flight get a moment to finish.
    app.cleanup_ctx.append(runs_ctx)
    app.cleanup_ctx.append(discovery_ctx)
    # Last in, first out: the jobs stop before the discovery client and the pool they use.
    app.cleanup_ctx.append(jobs_ctx)
    app.on_response_prepare.append(add_cors_headers)
    setup_observability(app, settings)
    _add_views(app, API_MODULES)
    setup_openapi(app)
    _add_other_slash_spelling(app)
    return app
