"""bcrypt hashing off the event loop: one hash costs ~250 ms of CPU (D11).

The work runs in a small pool of low-priority threads: on a 2-core machine a burst of logins
would otherwise take every core from the event-loop thread, and every other request would wait.
"""
from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import bcrypt

# passlib truncated silently and bcrypt 5 raises; keep passlib's behaviour so old hashes verify (D36).
_MAX_BYTES = 72
_NICENESS = 10


def _lower_priority() -> None:
    # Linux schedules threads individually, so this lowers only the hashing thread.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICENESS)
    except (AttributeError, OSError):
        pass


_EXECUTOR = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2)), thread_name_prefix="bcrypt",
                               initializer=_lower_priority)


def _prepare(password: str) -> bytes:
    return password.encode("utf-8")[:_MAX_BYTES]


def _hash(secret: bytes) -> bytes:
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=12, prefix=b"2b"))


def _check(secret: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, hashed)
    except ValueError:
        # Not a bcrypt hash: treat like a wrong password.
        return False


async def hash_password(password: str) -> str:
    hashed = await asyncio.get_running_loop().run_in_executor(_EXECUTOR, _hash, _prepare(password))
    return hashed.decode("ascii")


async def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    return await asyncio.get_running_loop().run_in_executor(
        _EXECUTOR, _check, _prepare(password), hashed.encode("ascii"))


# Verified against when the user does not exist, so response time does not reveal valid usernames.
DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuQ0f8g2bx1ZkQoLhWUDnqWl3C7LJ8f6W"
