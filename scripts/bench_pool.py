"""Pool fairness micro-benchmark: asyncpg's own pool against db.create_pool's FairPool.

    uv run python scripts/bench_pool.py [--dsn postgresql://...] [--duration 5]

N tasks each run `SELECT 1` in a loop through `async with pool.acquire()` on a 10-connection
pool, in one process, in alternating rounds; medians of p50/p99 of acquire-to-release and throughput per pool class and N. N=1 is
the uncontended cost of the gate. Uses a temporary embedded PostgreSQL unless --dsn.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
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


async def run(dsn: str, duration: float, rounds: int) -> None:
    classes = (("asyncpg.Pool", asyncpg.Pool), ("FairPool", FairPool))
    pools = {name: await cls(dsn, min_size=10, max_size=10, max_queries=50000,
                             max_inactive_connection_lifetime=300.0, loop=None,
                             connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                             reset=db._reset_connection)
             for name, cls in classes}
    try:
        for tasks in (1, 32, 128):
            # Alternating short rounds, median of each: on a shared machine a neighbour's burst
            # otherwise lands on one pool's whole measurement.
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pools}
            for _ in range(rounds):
                for name, pool in pools.items():
                    runs[name].append(await drive(pool, tasks, duration / rounds))
            for name, results in runs.items():
                rps, p50, p99 = (statistics.median(r[i] for r in results) for i in range(3))
                print(f"{name:<13} tasks={tasks:<4} {rps:9.1f} q/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
                      f"p99/p50 {p99 / p50:5.2f}", flush=True)
    finally:
        for pool in pools.values():
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per pool and concurrency")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            from tests.pg import embedded_server

            dsn = stack.enter_context(embedded_server()).dsn
        uvloop.run(run(dsn, args.duration, args.rounds))


if __name__ == "__main__":
    main()
