"""CORS as the reference's Starlette middleware does it, but echoing the origin (README §CORS)."""
from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from genai_backend.config import SETTINGS

_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


def _allowed(request: web.Request, origin: str) -> bool:
    origins = request.app[SETTINGS].cors_origins
    return "*" in origins or origin in origins


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
        if not _allowed(request, origin):
            return web.Response(status=400, text="Disallowed CORS origin")
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Allow-Methods": _METHODS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        }
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        return web.Response(text="OK", headers=headers)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A signal, not the middleware: file and WebSocket responses are prepared inside handlers,
    # and error responses (401, 422, 500) need the headers too.
    origin = request.headers.get("Origin")
    if origin and _allowed(request, origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")
