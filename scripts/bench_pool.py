"""Pool fairness micro-benchmark: asyncpg's own pool against db.create_pool's FairPool.

    uv run python scripts/bench_pool.py [--dsn postgresql://...] [--duration 5]

N tasks each run `SELECT 1` in a loop through `async with pool.acquire()` on a 10-connection
pool, in one process; p50/p99 of acquire-to-release and throughput per pool class and N. N=1 is
the uncontended cost of the gate. Uses a temporary embedded PostgreSQL unless --dsn.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import uvloop
from benchkit import percentile

from genai_backend import db
from genai_backend.fairpool import FairPool


async def drive(pool: Any, tasks: int, duration: float) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


async def run(dsn: str, duration: float) -> None:
    for tasks in (1, 32, 128):
        for name, cls in (("asyncpg.Pool", asyncpg.Pool), ("FairPool", FairPool)):
            pool = await cls(dsn, min_size=10, max_size=10, max_queries=50000, max_inactive_connection_lifetime=300.0,
                             loop=None, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                             reset=db._reset_connection)
            try:
                rps, p50, p99 = await drive(pool, tasks, duration)
            finally:
                await pool.close()
            print(f"{name:<13} tasks={tasks:<4} {rps:9.1f} q/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
                  f"p99/p50 {p99 / p50:5.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn")
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            from tests.pg import embedded_server

            dsn = stack.enter_context(embedded_server()).dsn
        uvloop.run(run(dsn, args.duration))


if __name__ == "__main__":
    main()
