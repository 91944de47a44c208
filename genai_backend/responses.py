"""JSON encoding shared by every response: compact, with a Content-Length, datetimes as naive ISO."""
from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not recognise as uuid.UUID.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode(data: Any) -> bytes:
    # orjson writes naive datetimes exactly like datetime.isoformat() and UUIDs lower-case.
    return orjson.dumps(data, default=_default)


def dumps(data: Any) -> str:
    return encode(data).decode()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return encoded_json_response(encode(data), status, headers)


def encoded_json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response for a body `encode` produced (earlier, for a cached answer)."""
    # A bytes body always gets a Content-Length; the front-end ignores bodies without one.
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)
