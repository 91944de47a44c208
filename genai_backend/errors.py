"""The ApiError family and the one middleware that turns every failure into `{"detail": ...}`."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

from genai_backend.observability import metrics
from genai_backend.protocol import oversized
from genai_backend.responses import json_response

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400

    def __init__(self, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequestError(ApiError):
    # The reference answers most "not found" and ownership cases with 400; clients depend on it.
    status = 400


class UnauthorizedError(ApiError):
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class ServiceUnavailableError(ApiError):
    status = 503


class ServerError(ApiError):
    status = 500


class ValidationFailed(ApiError):
    """422 with the FastAPI/pydantic error list (errors.md §2)."""

    status = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)


NOT_AUTHENTICATED = "Not authenticated"
TOKEN_INVALID = "Token is not valid or expired. Please log in again"


_DATABASE_DOWN = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def _http_exception_response(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        # Redirects and the like are answers, not errors.
        return web.Response(status=exc.status, headers=exc.headers)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "www-authenticate"}}
    return json_response({"detail": exc.reason}, status=exc.status, headers=headers or None)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = oversized(request)
    if refused is not None:
        return json_response({"detail": refused[1]}, status=refused[0])
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response({"detail": exc.detail}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        return _http_exception_response(exc)
    except ConnectionResetError as exc:
        if not _client_gone(request):
            return _database_down(request, exc)
        # The client hung up (mid-upload, typically): nobody is left to answer, nothing is wrong here.
        log.info("client closed the connection during %s %s", request.method, request.path)
        return json_response({"detail": "Client closed the connection"}, status=400)
    except _DATABASE_DOWN as exc:
        return _database_down(request, exc)
    except Exception:
        # Includes database outages that slipped past a handler: log it, leak nothing.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"detail": "Internal Server Error"}, status=500)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _database_down(request: web.Request, exc: BaseException) -> web.StreamResponse:
    # An outage is not a bug: say so, and let clients retry (issue: faults).
    log.warning("database unavailable on %s %s: %r", request.method, request.path, exc)
    metrics.DB_UNAVAILABLE.inc()
    return json_response({"detail": "Database unavailable, try again later"}, status=503,
                         headers={"Retry-After": "1"})
