"""Legitimate-login latency of user B while 100 concurrent wrong-password logins hit user A.

    uv run python scripts/bench_logins.py [--flood 100] [--duration 15] [--code DIR]

Starts a temporary embedded PostgreSQL (or `--dsn`) and the service as a real process with its
default limits, registers A and B, measures B's login alone, then again while a flood keeps
`--flood` wrong-password logins for A in flight. `--code DIR` serves another checkout of the
service (e.g. the previous commit, from `git archive`) for a before/after comparison.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from benchkit import ROOT, percentile, start_world, wait_ready

PASSWORD = "Str0ng!pass"
# The bench world switches the limits off for throughput runs; this one measures them.
_LIMIT_VARS = ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "LOGIN_MAX_FAILURES_PER_ADDRESS", "REGISTER_MAX_PER_ADDRESS",
               "PASSWORD_QUEUE_MAX")


async def _login(http: aiohttp.ClientSession, base: str, username: str, password: str) -> tuple[int, float]:
    started = time.perf_counter()
    async with http.post(f"{base}/api/login/access-token", data={"username": username, "password": password}) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - started


async def _b_logins(http: aiohttp.ClientSession, base: str, count: int, pause: float) -> list[tuple[int, float]]:
    results = []
    for _ in range(count):
        results.append(await _login(http, base, "user_b", PASSWORD))
        await asyncio.sleep(pause)
    return results


def _summary(results: list[tuple[int, float]]) -> dict[str, object]:
    times = [t * 1000 for _, t in results]
    return {"n": len(results), "statuses": dict(Counter(s for s, _ in results)),
            "p50_ms": round(percentile(times, 0.5), 1), "p90_ms": round(percentile(times, 0.9), 1),
            "max_ms": round(max(times), 1)}


async def main(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-logins-", args.dsn)
        env = {**os.environ, **world.service_env()}
        for name in _LIMIT_VARS:
            env.pop(name, None)
        if args.no_throttle:
            # Only the hash queue stands between the flood and B: what a flood from many
            # addresses against many accounts would meet.
            env.update(LOGIN_MAX_FAILURES_PER_ACCOUNT="0", LOGIN_MAX_FAILURES_PER_ADDRESS="0")
        code = Path(args.code).resolve() if args.code else ROOT
        service = subprocess.Popen([sys.executable, "-m", "genai_backend"], env=env, cwd=code,
                                   stdout=subprocess.DEVNULL, stderr=open(world.tmp / "service.log", "w"))
        stack.callback(lambda: (service.send_signal(signal.SIGTERM), service.wait(20)))
        base = f"http://127.0.0.1:{world.port}"
        await wait_ready(f"{base}/ready")
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        for name in ("user_a", "user_b"):
            async with http.post(f"{base}/api/register", json={"username": name, "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
        await _login(http, base, "user_b", PASSWORD)  # starts the hashing workers
        alone = await _b_logins(http, base, 10, 0.2)

        # The flood runs in a process of its own (B's timings must not include a load generator
        # spinning on the same event loop) and from another address (all of 127/8 is loopback).
        flood = subprocess.Popen([sys.executable, __file__, "--flood-only", base, "--flood", str(args.flood)],
                                 stdout=subprocess.PIPE, text=True)
        stack.callback(lambda: flood.poll() is None and (flood.kill(), flood.wait()))
        await asyncio.sleep(2.0)  # let the flood fill the queue first
        during = await _b_logins(http, base, max(5, int(args.duration / 0.5)), 0.5)
        flood.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(flood.communicate, timeout=60)
        flood_statuses = json.loads(out)
        report = {"code": str(code), "flood": args.flood, "throttle": not args.no_throttle,
                  "b_alone": _summary(alone), "b_during_flood": _summary(during),
                  "flood_statuses": dict(flood_statuses)}
        print(json.dumps(report, indent=2))


async def flood_only(base: str, concurrency: int) -> None:
    """Wrong-password logins for user A, `concurrency` at a time, until SIGINT; prints the statuses."""
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    connector = aiohttp.TCPConnector(limit=0, local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async def flooder() -> None:
            while not stop.is_set():
                status, _ = await _login(http, base, "user_a", "Wrong!pass1")
                statuses[status] += 1

        await asyncio.gather(*(flooder() for _ in range(concurrency)))
    print(json.dumps(dict(statuses)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", type=int, default=100, help="concurrent wrong-password logins for user A")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of B's logins during the flood")
    parser.add_argument("--dsn", default=None, help="an existing PostgreSQL instead of a temporary one")
    parser.add_argument("--code", default=None, help="serve the service from this source tree")
    parser.add_argument("--no-throttle", action="store_true", help="switch the login throttling off")
    parser.add_argument("--flood-only", metavar="BASE_URL", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    asyncio.run(flood_only(parsed.flood_only, parsed.flood) if parsed.flood_only else main(parsed))
