"""bcrypt hashing, always in a worker thread: one hash costs ~250 ms of CPU (D11)."""
from __future__ import annotations

import asyncio

import bcrypt

# passlib truncated silently and bcrypt 5 raises; keep passlib's behaviour so old hashes verify (D36).
_MAX_BYTES = 72


def _prepare(password: str) -> bytes:
    return password.encode("utf-8")[:_MAX_BYTES]


async def hash_password(password: str) -> str:
    secret = _prepare(password)
    hashed = await asyncio.to_thread(lambda: bcrypt.hashpw(secret, bcrypt.gensalt(rounds=12, prefix=b"2b")))
    return hashed.decode("ascii")


async def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    secret = _prepare(password)
    try:
        return await asyncio.to_thread(bcrypt.checkpw, secret, hashed.encode("ascii"))
    except ValueError:
        # Not a bcrypt hash: treat like a wrong password.
        return False


# Verified against when the user does not exist, so response time does not reveal valid usernames.
DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuQ0f8g2bx1ZkQoLhWUDnqWl3C7LJ8f6W"
