"""What an API key costs per request against a user JWT, on one cheap authenticated GET.

    uv run python scripts/bench_keys.py [--dsn postgresql://...] [--requests 5000] [--concurrency 8]

Starts what it needs (embedded PostgreSQL unless --dsn, the service as a real `genai-backend`
process), creates a user and a `read` key, then sends the same `GET /api/agentflows/` with each
credential in turn, twice, checking every answer. A JWT's user check is remembered for a second;
a key is looked up on every request (revocation must be seen at once), so the difference is about
one indexed round trip to PostgreSQL.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack

import aiohttp

# benchkit first: it puts the project root on sys.path.
from benchkit import ROOT, percentile, start_world, wait_ready

PASSWORD = "Bench!pass1"


async def drive(http: aiohttp.ClientSession, url: str, headers: dict[str, str], requests: int,
                concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            async with http.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-keys-", args.dsn)
        env = {**os.environ, **world.service_env()}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "genai_backend", env=env, cwd=ROOT,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)

        async def stop() -> None:
            proc.terminate()
            await proc.wait()

        stack.push_async_callback(stop)
        base = f"http://127.0.0.1:{world.port}"
        await wait_ready(f"{base}/ready")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/register", json={"username": "bench", "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
            async with http.post(f"{base}/api/login/access-token",
                                 data={"username": "bench", "password": PASSWORD}) as resp:
                jwt = (await resp.json())["access_token"]
            async with http.post(f"{base}/api/keys", json={"name": "bench", "scopes": ["read"]},
                                 headers={"Authorization": f"Bearer {jwt}"}) as resp:
                key = (await resp.json())["key"]
            url = f"{base}/api/agentflows/"
            for name, token in (("user JWT", jwt), ("API key", key)) * 2:
                headers = {"Authorization": f"Bearer {token}"}
                await drive(http, url, headers, 500, args.concurrency)  # warm-up
                latencies, elapsed = await drive(http, url, headers, args.requests, args.concurrency)
                print(f"{name:9} p50 {percentile(latencies, 0.5) * 1000:6.2f} ms  "
                      f"p99 {percentile(latencies, 0.99) * 1000:6.2f} ms  {args.requests / elapsed:7.0f} req/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing, migrated PostgreSQL (default: an embedded one)")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
