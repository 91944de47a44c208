"""Who is calling: the three credential modes of spec README §Authentication, as one middleware.

Handlers declare their mode with `@auth(USER)` (or USER_OR_AGENT, DUAL); the middleware resolves
the acting user before any parameter is validated, as the reference does (errors.md §1).
"""
from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami import docs

from genai_backend.auth import tokens
from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import NOT_AUTHENTICATED, TOKEN_INVALID, BadRequestError, UnauthorizedError
from genai_backend.openapi import API_KEY, OAUTH2
from genai_backend.validation import endpoint

USER = "user"
USER_OR_AGENT = "user_or_agent"
DUAL = "dual"

USER_ID = web.RequestKey("user_id", uuid.UUID)

T = TypeVar("T")
_ATTR = "__auth_mode__"


class KnownUsers:
    """Users seen to exist in the last `ttl` seconds, so a burst of requests asks the database once.

    Nothing in the API deletes a user; one deleted directly in the database is refused within
    `ttl`. Agent tokens are not cached: an agent deleted through the API must fail at once (D25).
    """

    def __init__(self, ttl: float = 1.0, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._seen: dict[uuid.UUID, float] = {}

    async def exists(self, request: web.Request, user_id: uuid.UUID) -> bool:
        now = time.monotonic()
        seen = self._seen.get(user_id)
        if seen is not None and now - seen < self.ttl:
            return True
        if not await queries.user_exists(request.app[POOL], user_id=user_id):
            self._seen.pop(user_id, None)
            return False
        if len(self._seen) >= self.max_size:
            self._seen.clear()
        self._seen[user_id] = now
        return True


KNOWN_USERS = web.AppKey("known_users", KnownUsers)



def auth(mode: str) -> Callable[[T], T]:
    """Mark a handler's credential mode, and document it in OpenAPI."""
    security: list[dict[str, list[str]]] = [{OAUTH2: []}]
    if mode == DUAL:
        security.append({API_KEY: []})

    def decorate(handler: T) -> T:
        setattr(handler, _ATTR, mode)
        return cast(T, docs(security=security)(cast(Any, handler)))

    return decorate


def _mode(request: web.Request) -> str | None:
    return getattr(endpoint(request), _ATTR, None)


def bearer_token(request: web.Request) -> str:
    """FastAPI's OAuth2PasswordBearer: scheme must be `Bearer`, any case."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer":
        raise UnauthorizedError(NOT_AUTHENTICATED)
    return token


async def user_from_token(request: web.Request, token: str, allow_agent: bool) -> uuid.UUID:
    try:
        claims = tokens.decode(token, request.app[SETTINGS].secret_keys)
    except tokens.InvalidToken:
        raise UnauthorizedError(TOKEN_INVALID) from None
    pool = request.app[POOL]
    if claims.user_id is not None:
        # An agent token acts as its owner, but only while the agent row still exists (D25).
        if allow_agent and await queries.agent_belongs_to(pool, agent_id=claims.sub, creator_id=claims.user_id):
            return claims.user_id
        raise UnauthorizedError(TOKEN_INVALID)
    if not await request.app[KNOWN_USERS].exists(request, claims.sub):
        raise UnauthorizedError(TOKEN_INVALID)
    return claims.sub


async def _dual(request: web.Request) -> uuid.UUID:
    """README §3 decision table, in its order."""
    header = request.headers.get("Authorization", "").strip()
    key = request.headers.get("X-API-KEY", "")
    has_uid = "user_id" in request.query
    if not has_uid and not header:
        raise BadRequestError("You must provide either 'user_id' or your jwt token to continue.")
    if header and key and has_uid:
        raise BadRequestError("You must provide either 'user_id' or your jwt token, but not both at the same time.")
    if header and has_uid:
        raise BadRequestError("Lookup by user_id is not allowed for plain authenticated users.")
    if has_uid:
        expected = request.app[SETTINGS].master_be_api_key.encode()
        if not key or not hmac.compare_digest(key.encode(), expected):
            raise UnauthorizedError("You must provide x-api-key header if user_id query parameter is provided.")
        # The id itself is validated (422) with the other query parameters.
        raw = request.query["user_id"]
        try:
            return uuid.UUID(raw)
        except ValueError:
            return uuid.UUID(int=0)
    token = header.rsplit(" ", 1)[-1]
    try:
        claims = tokens.decode(token, request.app[SETTINGS].secret_keys)
    except tokens.InvalidToken:
        raise BadRequestError("JWT token is invalid or expired") from None
    if claims.user_id is not None or not await request.app[KNOWN_USERS].exists(request, claims.sub):
        raise BadRequestError("JWT token is invalid or expired")
    return claims.sub


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    mode = _mode(request)
    if mode == USER:
        request[USER_ID] = await user_from_token(request, bearer_token(request), allow_agent=False)
    elif mode == USER_OR_AGENT:
        request[USER_ID] = await user_from_token(request, bearer_token(request), allow_agent=True)
    elif mode == DUAL:
        request[USER_ID] = await _dual(request)
    return await handler(request)
