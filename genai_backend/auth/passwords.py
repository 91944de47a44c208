"""bcrypt hashing off the event loop: one hash costs ~250 ms of CPU (D11).

The work runs in a small pool of low-priority worker processes, not threads. On a 2-core machine a
burst of logins otherwise takes every core, and a hashing thread shares the event loop's GIL: when
the scheduler parks a low-priority thread that holds it, the event loop waits with it.
"""
from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import bcrypt

from genai_backend.fairqueue import FairQueue, QueueFull
from genai_backend.observability import metrics

# passlib truncated silently and bcrypt 5 raises; keep passlib's behaviour so old hashes verify (D36).
# New passwords longer than this are refused at registration (schemas/users.py).
MAX_BYTES = 72
_MAX_BYTES = MAX_BYTES
_NICENESS = 10
_PR_SET_PDEATHSIG = 1


class HashQueueFull(Exception):
    """Too many hashes are waiting for a worker in this process: the caller answers 503."""


def _die_with_parent(parent: int) -> None:
    # A kill -9 of the service runs no clean-up, so the kernel must end the workers (Linux only;
    # elsewhere the executor's own pipe watch still ends idle workers once they notice).
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        # The parent died before the request took effect.
        os._exit(1)


def _init_worker(parent: int) -> None:
    # Ctrl-C reaches the whole foreground process group: the service shuts its workers down
    # itself, so a worker must not die of it with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    _lower_priority()


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
        self.workers = max(1, os.cpu_count() or 2)

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork would copy a process that runs threads and holds sockets.
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
        return self._pool

    def discard(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_HASHERS = _Hashers()


# Turns by key (the account, or the client address): a flood of wrong passwords for one account
# waits behind itself, not in front of everyone else's login.
_QUEUE = FairQueue(max_waiting=32, per_key=4)


def set_queue_limit(max_waiting: int, per_key: int = 4) -> None:
    """At most this many hashes wait for a worker in this process, `per_key` of one key (0: no limit)."""
    _QUEUE.max_waiting = max_waiting if max_waiting > 0 else sys.maxsize
    _QUEUE.per_key = per_key if max_waiting > 0 else sys.maxsize


async def _run(fn: object, *args: bytes, key: str = "") -> object:
    try:
        await _QUEUE.acquire(key, _HASHERS.workers)
    except QueueFull:
        raise HashQueueFull() from None
    try:
        return await _run_now(fn, *args)
    finally:
        _QUEUE.release()


async def _run_now(fn: object, *args: bytes) -> object:
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


async def hash_password(password: str, key: str = "") -> str:
    """`key` names who asks (the client address), for the turns of the queue."""
    hashed = await _run(_hash, _prepare(password), key=key)
    assert isinstance(hashed, bytes)
    return hashed.decode("ascii")


async def verify_password(password: str, hashed: str | None, key: str = "") -> bool:
    """`key` names who asks (the account), for the turns of the queue."""
    if not hashed:
        return False
    checked: Any = await _run(_check, _prepare(password), hashed.encode("ascii"), key=key)
    return bool(checked)


# Verified against when the user does not exist, so response time does not reveal valid usernames.
DUMMY_HASH = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuQ0f8g2bx1ZkQoLhWUDnqWl3C7LJ8f6W"
