"""bcrypt hashing off the event loop: one hash costs ~250 ms of CPU (D11).

The work runs in a small pool of low-priority worker processes, not threads. On a 2-core machine a
burst of logins otherwise takes every core, and a hashing thread shares the event loop's GIL: when
the scheduler parks a low-priority thread that holds it, the event loop waits with it.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import bcrypt

from genai_backend.observability import metrics

# passlib truncated silently and bcrypt 5 raises; keep passlib's behaviour so old hashes verify (D36).
_MAX_BYTES = 72
_NICENESS = 10


def _lower_priority() -> None:
    # SCHED_IDLE yields the core the moment anything else wants it; a nice level is the fallback.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(_NICENESS)
        except OSError:
            pass


class _Hashers:
    """Worker processes started on first use (start-up and idle memory stay small)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork would copy a process that runs threads and holds sockets.
            self._pool = ProcessPoolExecutor(max_workers=max(1, os.cpu_count() or 2),
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_lower_priority)
        return self._pool

    def discard(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_HASHERS = _Hashers()


async def _run(fn: object, *args: bytes) -> object:
    loop = asyncio.get_running_loop()
    with metrics.hashing():
        try:
            return await loop.run_in_executor(_HASHERS.get(), fn, *args)  # type: ignore[arg-type]
        except BrokenProcessPool:
            # A worker was killed (OOM killer, a signal): start new ones and try once more.
            _HASHERS.discard()
            return await loop.run_in_executor(_HASHERS.get(), fn, *args)  # type: ignore[arg-type]


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
    hashed = await _run(_hash, _prepare(password))
    assert isinstance(hashed, bytes)
    return hashed.decode("ascii")


async def verify_password(password: str, hashed: str | None) -> bool:
    if not hashed:
        return False
    return bool(await _run(_check, _prepare(password), hashed.encode("ascii")))


# Verified against when the user does not exist, so response time does not reveal valid usernames.
DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuQ0f8g2bx1ZkQoLhWUDnqWl3C7LJ8f6W"
