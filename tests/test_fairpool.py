"""The first-come-first-served pool gate: arrival order under contention, cancellation, broken connections."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from genai_backend.db import create_pool
from genai_backend.fairpool import FairPool, FifoGate

# Every test runs under this bound: a leaked place or connection fails it, never hangs it.
BOUND = 20


async def _settle() -> None:
    """Let every ready task run until it blocks (a handful of loop iterations is plenty here)."""
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
async def pool(database_dsn: str) -> AsyncIterator[FairPool]:
    pool = await create_pool(database_dsn, 1, 2)
    assert isinstance(pool, FairPool)
    try:
        yield pool
    finally:
        pool.terminate()


async def _all_connections_free(pool: FairPool) -> None:
    """Every connection of the pool can be taken at once, and each still answers."""
    size = pool.get_max_size()
    async with asyncio.timeout(5):
        conns = [await pool.acquire() for _ in range(size)]
    try:
        for conn in conns:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        for conn in conns:
            await pool.release(conn)
    assert pool.gate.free == size and pool.gate.waiting == 0


async def test_gate_serves_waiters_in_arrival_order_before_a_newcomer() -> None:
    async with asyncio.timeout(BOUND):
        gate = FifoGate(1)
        await gate.acquire()
        served: list[str] = []

        async def take(name: str) -> None:
            await gate.acquire()
            served.append(name)

        waiters = [asyncio.create_task(take(f"w{i}")) for i in range(3)]
        await _settle()
        assert gate.waiting == 3
        # The place is freed and, before the woken waiter runs, a newcomer asks: it must queue.
        gate.release()
        newcomer = asyncio.create_task(take("newcomer"))
        await _settle()
        assert served == ["w0"]
        for _ in range(3):
            gate.release()
            await _settle()
        await asyncio.gather(*waiters, newcomer)
        assert served == ["w0", "w1", "w2", "newcomer"]


@pytest.mark.parametrize("hops", range(8))
async def test_pool_waiter_is_not_overtaken_by_a_newcomer(database_dsn: str, hops: int) -> None:
    """A newcomer asks `hops` loop iterations after a release starts, while a waiter is queued.

    Over the range of hops the newcomer lands in every phase of asyncpg's release (before, during,
    just after the connection goes back); with asyncpg's own pool it overtakes the waiter in one of them.
    """
    pool = await create_pool(database_dsn, 1, 1)
    try:
        async with asyncio.timeout(BOUND):
            served: list[str] = []

            async def take(name: str) -> None:
                conn = await pool.acquire()
                served.append(name)
                await pool.release(conn)

            held = await pool.acquire()
            waiter = asyncio.create_task(take("waiter"))
            await _settle()
            release = asyncio.create_task(pool.release(held))
            for _ in range(hops):
                await asyncio.sleep(0)
            newcomer = asyncio.create_task(take("newcomer"))
            await asyncio.gather(waiter, release, newcomer)
            assert served == ["waiter", "newcomer"]
    finally:
        pool.terminate()


async def test_cancelled_waiting_acquire_leaks_nothing(pool: FairPool) -> None:
    async with asyncio.timeout(BOUND):
        held = [await pool.acquire() for _ in range(2)]
        served: list[str] = []

        async def take(name: str) -> None:
            conn = await pool.acquire()
            served.append(name)
            await pool.release(conn)

        tasks = {name: asyncio.create_task(take(name)) for name in ("a", "b", "c")}
        await _settle()
        assert pool.gate.waiting == 3
        tasks["b"].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks["b"]
        assert pool.gate.waiting == 2
        for conn in held:
            await pool.release(conn)
        await asyncio.gather(tasks["a"], tasks["c"])
        assert served == ["a", "c"]
        await _all_connections_free(pool)


async def test_acquire_cancelled_after_being_handed_a_place_passes_it_on(pool: FairPool) -> None:
    async with asyncio.timeout(BOUND):
        held = [await pool.acquire() for _ in range(2)]
        served: list[str] = []

        async def take(name: str) -> None:
            conn = await pool.acquire()
            served.append(name)
            await pool.release(conn)

        first = asyncio.create_task(take("first"))
        await _settle()
        second = asyncio.create_task(take("second"))
        await _settle()
        # Released from this task: the place goes to `first`, which has not run yet when cancelled.
        await pool.release(held.pop())
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert served == ["second"]
        await pool.release(held.pop())
        await _all_connections_free(pool)


async def test_timed_out_acquire_leaks_nothing(pool: FairPool) -> None:
    async with asyncio.timeout(BOUND):
        held = [await pool.acquire() for _ in range(2)]
        with pytest.raises(asyncio.TimeoutError):
            await pool.acquire(timeout=0.05)
        assert pool.gate.waiting == 0
        for conn in held:
            await pool.release(conn)
        await _all_connections_free(pool)


async def test_broken_connection_frees_its_place_once(pool: FairPool, db: asyncpg.Connection) -> None:
    async with asyncio.timeout(BOUND):
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        while True:  # the server's goodbye arrives when it arrives
            try:
                if conn.is_closed():
                    break
            except asyncpg.InterfaceError:  # asyncpg took the broken connection back by itself
                break
            await asyncio.sleep(0.01)
        # ...but its place at the gate stays taken until the holder releases it.
        assert pool.gate.free == 1
        with pytest.raises(asyncpg.InterfaceError):
            await conn.fetchval("SELECT 1")
        await pool.release(conn)
        await pool.release(conn)  # twice: asyncpg ignores it, the gate must too
        assert pool.gate.free == 2
        await _all_connections_free(pool)
