"""API keys (`gk_…`) as a credential: minting, hashing, the per-request lookup and the scope rule."""
from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from genai_backend.db import queries
from genai_backend.errors import TOKEN_INVALID, ApiError, UnauthorizedError

KEY_PREFIX = "gk_"
# `gk_` and 8 characters (48 bits) of the random part: enough to tell a user's keys apart in a
# listing; the other ~208 bits stay secret.
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8

CHAT = "chat"
READ = "read"
MANAGE = "manage"
SCOPES = (CHAT, READ, MANAGE)
DEFAULT_SCOPES = (CHAT,)

# What a route accepts from a key: any one of these scopes. Empty: no key at all (user JWT only).
Accepted = tuple[str, ...]
CHAT_OR_READ: Accepted = (CHAT, READ)
USER_TOKEN_ONLY: Accepted = ()

KEYS_REFUSED = "API keys cannot be used here: this endpoint needs a user token"


class ForbiddenError(ApiError):
    status = 403


@dataclass(frozen=True)
class Grant:
    """A live key: whose it is and what it may do."""

    key_id: uuid.UUID
    user_id: uuid.UUID
    scopes: tuple[str, ...]


def is_key(token: str) -> bool:
    # JWTs start with the base64 of `{"`, never with `gk_`.
    return token.startswith(KEY_PREFIX)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    """SHA-256: the key carries 256 random bits, so a slow hash would add cost and no safety."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_LENGTH]


def accepted_scopes(declared: Accepted | None, method: str) -> Accepted:
    """A route's declared scopes, or for a route that declares none: reads need `read`, the rest `manage`."""
    if declared is not None:
        return declared
    return (READ,) if method in ("GET", "HEAD") else (MANAGE,)


def missing_scope(grant: Grant, accepted: Accepted) -> str | None:
    """The 403 text when the key may not use a route that accepts `accepted`, else None."""
    if not accepted:
        return KEYS_REFUSED
    if any(scope in grant.scopes for scope in accepted):
        return None
    return f"This API key lacks the {' or '.join(repr(s) for s in accepted)} scope"


async def lookup_hash(pool: Any, digest: bytes) -> Grant | None:
    """The grant of the key with this hash, or None if it is unknown, revoked (deleted) or expired."""
    row = await queries.authenticate_api_key(pool, key_hash=digest)
    if row is None or not row["live"]:
        return None
    return Grant(key_id=row["id"], user_id=row["user_id"], scopes=tuple(row["scopes"]))


def lookup(pool: Any, key: str) -> Awaitable[Grant | None]:
    return lookup_hash(pool, key_hash(key))


async def hash_is_live(pool: Any, digest: bytes) -> bool:
    return await lookup_hash(pool, digest) is not None


async def user_from_key(pool: Any, key: str, accepted: Accepted) -> uuid.UUID:
    """The acting user of a REST request carrying `Bearer gk_…`: 401 for a dead key, 403 for a missing scope."""
    grant = await lookup(pool, key)
    if grant is None:
        raise UnauthorizedError(TOKEN_INVALID)
    problem = missing_scope(grant, accepted)
    if problem is not None:
        scope = " ".join(accepted) or "user-token"
        raise ForbiddenError(problem, headers={
            "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
    return grant.user_id

