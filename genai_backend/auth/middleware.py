"""Who is calling: the three credential modes of spec README §Authentication, as one middleware.

Handlers declare their mode with `@auth(USER)` (or USER_OR_AGENT, DUAL); the middleware resolves
the acting user before any parameter is validated, as the reference does (errors.md §1). An API
key (`Bearer gk_…`, auth/api_keys.py) stands in for a user JWT, within the scopes the handler
declares next to its mode: `@auth(USER, scope=MANAGE)`.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami import docs

from genai_backend.auth import api_keys, tokens
from genai_backend.auth.api_keys import CHAT, CHAT_OR_READ, MANAGE, READ, USER_TOKEN_ONLY  # noqa: F401
from genai_backend.config import DEFAULT_MASTER_BE_API_KEY, SETTINGS
from genai_backend.db import POOL, queries
from genai_backend.errors import NOT_AUTHENTICATED, TOKEN_INVALID, BadRequestError, UnauthorizedError
from genai_backend.observability.logs import set_user
from genai_backend.openapi import API_KEY, GK_KEY, OAUTH2
from genai_backend.validation import endpoint

USER = "user"
USER_OR_AGENT = "user_or_agent"
DUAL = "dual"

USER_ID = web.RequestKey("user_id", uuid.UUID)

T = TypeVar("T")
_ATTR = "__auth_mode__"
_SCOPE_ATTR = "__auth_key_scopes__"


class KnownUsers:
    """Users seen to exist in the last `ttl` seconds, so a burst of requests asks the database once.

    Nothing in the API deletes a user; one deleted directly in the database is refused within
    `ttl`. Agent tokens are not cached: an agent deleted through the API must fail at once (D25).
    """

    def __init__(self, ttl: float = 1.0, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._seen: dict[uuid.UUID, float] = {}
        # One lookup per user at a time: when an entry expires under load, every request in
        # flight for that user would ask at once (128 extra queries a second at c=128, each a
        # second wait for the pool: a visible p99 step); they share the one lookup instead.
        self._lookups: dict[uuid.UUID, asyncio.Task[bool]] = {}

    async def exists(self, request: web.Request, user_id: uuid.UUID) -> bool:
        seen = self._seen.get(user_id)
        if seen is not None and time.monotonic() - seen < self.ttl:
            return True
        lookup = self._lookups.get(user_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(request.app[POOL], user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda done: self._finished(user_id, done))
        # Shielded: one caller giving up must not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    def _finished(self, user_id: uuid.UUID, lookup: asyncio.Task[bool]) -> None:
        if self._lookups.get(user_id) is lookup:
            del self._lookups[user_id]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every caller may have given up before it failed

    async def _lookup(self, pool: Any, user_id: uuid.UUID) -> bool:
        asked = time.monotonic()
        if not await queries.user_exists(pool, user_id=user_id):
            self._seen.pop(user_id, None)
            return False
        if len(self._seen) >= self.max_size:
            self._seen.clear()
        self._seen[user_id] = asked
        return True


KNOWN_USERS = web.AppKey("known_users", KnownUsers)



def auth(mode: str, scope: str | api_keys.Accepted | None = None) -> Callable[[T], T]:
    """Mark a handler's credential mode and the API-key scopes it accepts (any one), and document both."""
    accepted = (scope,) if isinstance(scope, str) else scope
    security: list[dict[str, list[str]]] = [{OAUTH2: []}]
    if accepted != USER_TOKEN_ONLY:
        security.append({GK_KEY: []})
    if mode == DUAL:
        security.append({API_KEY: []})
    extra: dict[str, Any] = {} if accepted is None else {"x-api-key-scopes": list(accepted)}

    def decorate(handler: T) -> T:
        setattr(handler, _ATTR, mode)
        setattr(handler, _SCOPE_ATTR, accepted)
        return cast(T, docs(security=security, **extra)(cast(Any, handler)))

    return decorate


def _mode(request: web.Request) -> str | None:
    return getattr(endpoint(request), _ATTR, None)


def declared_scopes(handler: Any) -> api_keys.Accepted | None:
    return getattr(handler, _SCOPE_ATTR, None)


def _key_user(request: web.Request, key: str) -> Awaitable[uuid.UUID]:
    accepted = api_keys.accepted_scopes(declared_scopes(endpoint(request)), request.method)
    return api_keys.user_from_key(request.app[POOL], key, accepted)


def bearer_token(request: web.Request) -> str:
    """FastAPI's OAuth2PasswordBearer: scheme must be `Bearer`, any case."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer":
        raise UnauthorizedError(NOT_AUTHENTICATED)
    return token


async def user_from_token(request: web.Request, token: str, allow_agent: bool) -> uuid.UUID:
    if api_keys.is_key(token):
        return await _key_user(request, token)
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


def _may_use_key(request: web.Request) -> bool:
    """The router's published default key opens every user's data: only from this machine (dev mode)."""
    if request.app[SETTINGS].master_be_api_key != DEFAULT_MASTER_BE_API_KEY:
        return True
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        # A unix socket has no address and is local by nature.
        return not request.remote
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


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
        if not key or not hmac.compare_digest(key.encode(), expected) or not _may_use_key(request):
            raise UnauthorizedError("You must provide x-api-key header if user_id query parameter is provided.")
        # The id itself is validated (422) with the other query parameters.
        raw = request.query["user_id"]
        try:
            return uuid.UUID(raw)
        except ValueError:
            return uuid.UUID(int=0)
    token = header.rsplit(" ", 1)[-1]
    if api_keys.is_key(token):
        # A key is not a JWT: its failures are the 401/403 of every other route, not this table's 400.
        return await _key_user(request, token)
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
    if mode is not None:
        set_user(request[USER_ID])
    return await handler(request)
