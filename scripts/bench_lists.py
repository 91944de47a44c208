"""RSS of the service while list requests of the maximum page size run concurrently.

One user registers `--agents` agents whose descriptions and input schemas fill most of a 1 MiB
request body each; then `--concurrency` clients GET /api/agents/?limit=1000 (the maximum page) at
once, `--rounds` times, while the service's RSS is sampled every 10 ms. Also checks that a page
size over the maximum is refused with 422. Prints RSS idle, after loading, and the peak, in MiB,
and the peak as a ratio to its floor: the loaded process plus LANES large answers (answers.py).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack

import aiohttp
import psutil
from benchkit import ROOT, start_world, wait_ready

from genai_backend.answers import LANES

PASSWORD = "Bench-pass1!"


async def _login(http: aiohttp.ClientSession, base: str) -> str:
    user = {"username": "lists", "password": PASSWORD}
    async with http.post(f"{base}/api/register", json=user) as resp:
        assert resp.status in (200, 201), await resp.text()
    async with http.post(f"{base}/api/login/access-token", data=user) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def _load(http: aiohttp.ClientSession, base: str, headers: dict[str, str], agents: int, size: int) -> None:
    # A description of the largest stored length; the rest spread over the schema's properties.
    description = min(size // 2, 262_144)
    chunk = "x" * 100_000
    props = {f"p{i}": {"type": "string", "description": chunk}
             for i in range(max(1, (size - description) // len(chunk)))}
    for i in range(agents):
        body = {"name": f"agent {i}", "description": "d" * description,
                "input_parameters": {"type": "object", "properties": props}}
        async with http.post(f"{base}/api/agents/register", json=body, headers=headers) as resp:
            assert resp.status in (200, 201), (resp.status, (await resp.text())[:300])


async def _sample(proc: psutil.Process, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        await asyncio.sleep(0.01)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=150)
    parser.add_argument("--agent-bytes", type=int, default=800_000, help="approximate size of one agent")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mib = 1024 * 1024
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-lists-", None)
        env = {**os.environ, **world.service_env()}
        service = await asyncio.create_subprocess_exec(sys.executable, "-m", "genai_backend", env=env, cwd=ROOT,
                                                       stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.DEVNULL)

        async def stop_service() -> None:
            service.terminate()
            await service.wait()

        stack.push_async_callback(stop_service)
        base = f"http://127.0.0.1:{world.port}"
        await wait_ready(f"{base}/ready")
        proc = psutil.Process(service.pid)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            headers = {"Authorization": f"Bearer {await _login(http, base)}"}
            idle = proc.memory_info().rss
            started = time.monotonic()
            await _load(http, base, headers, args.agents, args.agent_bytes)
            loaded = proc.memory_info().rss
            print(f"loaded {args.agents} agents of ~{args.agent_bytes / mib:.2f} MiB in {time.monotonic() - started:.1f} s")
            async with http.get(f"{base}/api/agents/?limit=1001", headers=headers) as resp:
                print("limit=1001 ->", resp.status)
            peak = [loaded]
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample(proc, stop, peak))
            sizes: list[int] = []

            async def fetch() -> None:
                async with http.get(f"{base}/api/agents/?limit=1000", headers=headers) as resp:
                    assert resp.status == 200, resp.status
                    sizes.append(len(await resp.read()))

            started = time.monotonic()
            for _ in range(args.rounds):
                await asyncio.gather(*(fetch() for _ in range(args.concurrency)))
            took = time.monotonic() - started
            stop.set()
            await sampler
            after = proc.memory_info().rss
        print(f"answer {max(sizes) / mib:.1f} MiB, {args.rounds} rounds of {args.concurrency} in {took:.1f} s")
        print(f"RSS MiB: idle {idle / mib:.0f}, loaded {loaded / mib:.0f}, peak during the lists {peak[0] / mib:.0f}, "
              f"after {after / mib:.0f}")
        # The floor for this load: at most LANES large answers are in memory at once (answers.py).
        floor = loaded + LANES * max(sizes)
        print(f"peak / (loaded + {LANES} lanes x answer) = {peak[0] / floor:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
