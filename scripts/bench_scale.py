"""Several instances on one PostgreSQL: leader takeover time after kill -9, and fan-out latency.

    uv run python scripts/bench_scale.py [--instances 3] [--kills 10] [--requests 20] [--lines 10] [--dsn DSN]

Takeover: from `kill -9` of the leading process to the router double accepting the next
`master_server_be` connection. Fan-out: from an agent's `logger.info` call (the agent runs in this
process and puts `time.perf_counter()` in the line) to the frame arriving on a front-end socket
of an instance that does not lead.
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import aiohttp

# benchkit first: it puts the project root on sys.path for `tests`.
from benchkit import percentile, start_world

from tests.agents_helpers import invoke, run_agent
from tests.conftest import PASSWORD
from tests.instances import Instance, leaders, wait_for_leader
from tests.router_double import MASTER_SERVER_BE


async def takeovers(instances: list[Instance], http: aiohttp.ClientSession, world: Any, kills: int) -> list[float]:
    double = world.router.double
    times = []
    for _ in range(kills):
        leader = await wait_for_leader(instances, http)
        await double.wait_for_client(MASTER_SERVER_BE, 10)
        before = double.connections
        killed = time.perf_counter()
        await leader.kill()
        await double.wait_until(lambda before=before: double.connections > before and MASTER_SERVER_BE in double.clients,
                                30)
        times.append(time.perf_counter() - killed)
        await leader.start()  # back as a standby
        await leader.wait_ready(http)
    return times


async def fan_out(instances: list[Instance], http: aiohttp.ClientSession, world: Any, requests: int,
                  lines: int, on_leader: bool = False) -> list[float]:
    leader = await wait_for_leader(instances, http)
    other = leader if on_leader else next(i for i in instances if i is not leader and i.alive)
    username = f"bench_{uuid.uuid4().hex[:8]}"
    async with http.post(other.url + "/api/register", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
    async with http.post(other.url + "/api/login/access-token",
                         data={"username": username, "password": PASSWORD}) as resp:
        token = (await resp.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(other.url + "/api/agents/register", headers=headers,
                         json={"name": "timer", "description": "d", "input_parameters": {}}) as resp:
        agent = await resp.json()

    async def handler(agent_context: Any, text: str) -> str:
        """Logs timestamps."""
        for _ in range(lines):
            agent_context.logger.info(f"t={time.perf_counter():.9f}")
            await asyncio.sleep(0.002)
        return text

    running = await run_agent(world.router.url, agent["jwt"], "timer", "d", handler)
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with http.get(other.url + "/api/agents/", headers=headers) as resp:
                if any(row["is_active"] for row in await resp.json()):
                    break
            await asyncio.sleep(0.05)
        session_id = str(uuid.uuid4())
        async with http.ws_connect(other.url.replace("http", "ws") + f"/frontend/ws?token={token}"
                                   f"&session_id={session_id}") as ws:
            for _ in range(requests):
                await invoke(world.router.url, "bench-invoker", agent["id"], {"text": "x"}, str(uuid.uuid4()),
                             session_id)
                got = 0
                async with asyncio.timeout(10):
                    while got < lines:
                        frame = await ws.receive_json()
                        message = frame.get("log", {}).get("message", "")
                        if message.startswith("t="):
                            latencies.append(time.perf_counter() - float(message[2:]))
                            got += 1
    finally:
        await running.stop()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--dsn", help="an existing, empty PostgreSQL (default: a temporary embedded one)")
    args = parser.parse_args()
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-scale-", args.dsn)
        instances = [Instance(f"i{n}", world.dsn, world.router.url, world.secret, world.tmp,
                              extra_env={"MASTER_BE_API_KEY": world.be_key})
                     for n in range(args.instances)]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        for instance in instances:
            stack.push_async_callback(instance.stop)
        # One at a time: the first applies the migrations.
        for instance in instances:
            await instance.start()
            await instance.wait_ready(http)
        latencies = await fan_out(instances, http, world, args.requests, args.lines)
        print(f"fan-out to a non-leading instance, {len(latencies)} frames: "
              f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms, p99 {percentile(latencies, 0.99) * 1000:.2f} ms, "
              f"max {max(latencies) * 1000:.2f} ms")
        latencies = await fan_out(instances, http, world, args.requests, args.lines, on_leader=True)
        print(f"for comparison, to the leading instance's own socket: "
              f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms, p99 {percentile(latencies, 0.99) * 1000:.2f} ms")
        times = await takeovers(instances, http, world, args.kills)
        print(f"takeover after kill -9 of the leader, {len(times)} kills: "
              f"p50 {percentile(times, 0.5) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        print(f"most master_server_be sockets open at once: {world.router.double.max_open.get(MASTER_SERVER_BE)}; "
              f"leaders now: {[i.name for i in await leaders(instances, http)]}")


if __name__ == "__main__":
    asyncio.run(main())
