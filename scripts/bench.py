"""Benchmark the service against this machine's own limits (issue: proof of quality, part 1).

    uv run python scripts/bench.py [--dsn postgresql://...] [--duration 5] [--out bench.json]

Starts what it needs (embedded PostgreSQL unless --dsn, the service as a real `genai-backend`
process, a bare aiohttp server for the machine's limits, the router double and an echo master
agent), loads data, then drives every scenario with one load generator (aiohttp, in this
process) and checks every response's status and shape, so an error never counts as throughput.
Every figure is also printed as a ratio to the bare endpoints measured in the same run.
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
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

# benchkit first: it puts the project root on sys.path for `tests`.
from benchkit import ROOT, free_port, percentile, start_world, wait_ready

from tests.agents_helpers import run_master_agent

PASSWORD = "Bench!pass1"
GROUPS = ("http", "login", "files", "chat")

BARE_SERVER = r'''
import asyncio, sys
import asyncpg, orjson, uvloop
from aiohttp import web

async def main(port, dsn):
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    async def hello(request):
        return web.Response(body=orjson.dumps({"hello": "world"}), content_type="application/json")
    async def select1(request):
        async with pool.acquire() as conn:
            value = await conn.fetchval("SELECT 1")
        return web.Response(body=orjson.dumps({"value": value}), content_type="application/json")
    app = web.Application()
    app.router.add_get("/json", hello)
    app.router.add_get("/select1", select1)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()

uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
'''


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Result(dict):  # type: ignore[type-arg]
    @classmethod
    def of(cls, name: str, latencies: list[float], elapsed: float, errors: int, concurrency: int) -> Result:
        return cls(name=name, concurrency=concurrency, requests=len(latencies), errors=errors,
                   rps=len(latencies) / elapsed if elapsed else 0.0,
                   p50_ms=percentile(latencies, 0.5) * 1000, p99_ms=percentile(latencies, 0.99) * 1000)


async def drive(name: str, concurrency: int, duration: float,
                one: Callable[[], Awaitable[bool]]) -> Result:
    """Run `one()` from `concurrency` workers for `duration` seconds; False or an exception = error."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                ok = await one()
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result.of(name, latencies, time.perf_counter() - started, errors, concurrency)


async def get_json(http: aiohttp.ClientSession, url: str, check: Callable[[Any], bool],
                   **kwargs: Any) -> bool:
    async with http.get(url, **kwargs) as resp:
        if resp.status != 200:
            return False
        return check(await resp.json())


async def get_document(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url) as resp:
        body = await resp.read()
        # aiohttp asks for gzip and inflates: the whole document arrived if it ends the object.
        return resp.status == 200 and body.startswith(b"{") and body.endswith(b"}")


async def load_data(http: aiohttp.ClientSession, base: str, dsn: str) -> dict[str, Any]:
    """A user with 50 agents, 10 flows, 5 MCP servers, 5 A2A cards and 200 chat messages."""
    username = f"bench_{uuid.uuid4().hex[:8]}"
    async with http.post(f"{base}/api/register", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        user_id = (await resp.json())["id"]
    async with http.post(f"{base}/api/login/access-token", data={"username": username, "password": PASSWORD}) as resp:
        token = (await resp.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    agent_ids = []
    for i in range(50):
        schema = {"type": "function", "function": {"name": f"a{i}", "description": f"agent {i}",
                                                   "parameters": {"type": "object", "properties": {}, "required": []}}}
        async with http.post(f"{base}/api/agents/register", headers=headers,
                             json={"name": f"agent {i}", "description": f"agent {i}", "input_parameters": schema}) as resp:
            assert resp.status == 200, await resp.text()
            agent_ids.append((await resp.json())["id"])
    conn = await asyncpg.connect(dsn)
    try:
        # Agents are active while connected to the router; here we say so directly.
        await conn.execute("UPDATE agents SET is_active = true WHERE creator_id = $1", uuid.UUID(user_id))
        for i in range(5):
            server_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES ($1, $2, $3, true)",
                server_id, f"http://127.0.0.1:{9000 + i}/mcp", uuid.UUID(user_id))
            for t in range(3):
                await conn.execute(
                    'INSERT INTO mcptools (id, name, description, "inputSchema", alias, mcp_server_id) '
                    "VALUES ($1, $2, 'tool', $3, $4, $5)", uuid.uuid4(), f"tool_{t}",
                    json.dumps({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}),
                    f"tool_{t}_{'abcdef'[i]}xxxxx", server_id)
            card = {"defaultInputModes": ["text"], "defaultOutputModes": ["text"], "version": "1.0.0",
                    "capabilities": {}, "skills": [{"id": "s", "name": "skill", "description": "does it", "tags": []}]}
            await conn.execute(
                "INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active, creator_id) "
                "VALUES ($1, $2, $3, 'card', $4, $5, true, $6)", uuid.uuid4(), f"card_{i}", f"card_{i}_abcdef",
                f"http://127.0.0.1:{9100 + i}", json.dumps(card), uuid.UUID(user_id))
        session_id = uuid.uuid4()
        await conn.execute("INSERT INTO chatconversations (session_id, title, creator_id) VALUES ($1, 'bench', $2)",
                           session_id, uuid.UUID(user_id))
        for i in range(200):
            await conn.execute(
                "INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id) "
                "VALUES ($1, $2, $3, $4, $5)", uuid.uuid4(), uuid.uuid4(),
                "user" if i % 2 == 0 else "master_agent", f"message {i}", session_id)
    finally:
        await conn.close()
    for i in range(10):
        flow = [{"id": agent_ids[2 * i], "type": "genai"}, {"id": agent_ids[2 * i + 1], "type": "genai"}]
        async with http.post(f"{base}/api/agentflows/register", headers=headers,
                             json={"name": f"flow {i}", "description": "bench flow", "flow": flow}) as resp:
            assert resp.status == 200, await resp.text()
    return {"user_id": user_id, "token": token, "headers": headers, "session_id": str(session_id),
            "username": username}


async def bench_http(http: aiohttp.ClientSession, base: str, bare: str, data: dict[str, Any],
                     levels: list[int], duration: float, be_key: str) -> list[Result]:
    results: list[Result] = []
    key = {"X-API-KEY": be_key}
    active_url = f"{base}/api/agents/active?agent_type=all&user_id={data['user_id']}"
    scenarios: list[tuple[str, Callable[[], Awaitable[bool]]]] = [
        ("bare json", lambda: get_json(http, f"{bare}/json", lambda b: b == {"hello": "world"})),
        ("bare asyncpg SELECT 1", lambda: get_json(http, f"{bare}/select1", lambda b: b == {"value": 1})),
        ("GET /api/agents/active (X-API-KEY)", lambda: get_json(
            http, active_url, lambda b: b["count_active_connections"] == len(b["active_connections"]) == 80,
            headers=key)),
        ("GET /api/agents/", lambda: get_json(http, f"{base}/api/agents/", lambda b: len(b) == 50,
                                              headers=data["headers"])),
        # Not parsed: decoding 57 KB per answer would load the generator, not the server.
        ("GET /openapi.json", lambda: get_document(http, f"{base}/openapi.json")),
        ("GET /api/chats", lambda: get_json(http, f"{base}/api/chats", lambda b: len(b["chats"]) == 1,
                                            headers=data["headers"])),
        ("GET /api/chat", lambda: get_json(
            http, f"{base}/api/chat?session_id={data['session_id']}&per_page=5",
            lambda b: b["total_count"] == 200 and len(b["items"]) == 5, headers=data["headers"])),
    ]
    for concurrency in levels:
        for name, one in scenarios:
            results.append(await drive(name, concurrency, duration, one))
            print_row(results[-1])
    return results


async def bench_login(http: aiohttp.ClientSession, base: str, data: dict[str, Any], duration: float) -> list[Result]:
    """Logins (bcrypt) alone, then /health latency idle and during a burst of 64 logins."""
    form = {"username": data["username"], "password": PASSWORD}

    async def login() -> bool:
        async with http.post(f"{base}/api/login/access-token", data=form) as resp:
            return resp.status == 200 and "access_token" in await resp.json()

    async def health() -> bool:
        return await get_json(http, f"{base}/health", lambda b: b == {"status": "ok"})

    results = [await drive("POST /api/login/access-token", 32, duration, login)]
    print_row(results[-1])
    idle = await drive("GET /health (idle)", 4, 2, health)
    print_row(idle)
    burst = asyncio.gather(*(login() for _ in range(64)))
    during = await drive("GET /health (64 logins)", 4, 2, health)
    await burst
    print_row(during)
    return results + [idle, during]


async def bench_files(http: aiohttp.ClientSession, base: str, data: dict[str, Any], duration: float) -> list[Result]:
    payload = os.urandom(1024 * 1024)

    async def round_trip() -> bool:
        form = aiohttp.FormData()
        form.add_field("file", payload, filename="blob.bin", content_type="application/octet-stream")
        async with http.post(f"{base}/files", data=form, headers=data["headers"]) as resp:
            if resp.status != 201:
                return False
            file_id = (await resp.json())["id"]
        async with http.get(f"{base}/files/{file_id}", headers=data["headers"]) as resp:
            return resp.status == 200 and await resp.read() == payload

    result = await drive("1 MiB upload + download", 8, duration, round_trip)
    print_row(result)
    return [result]


async def chat_sessions(base: str, ws_base: str, http: aiohttp.ClientSession, sessions: int,
                        duration: float, pid: int, hold: bool = False) -> tuple[Result, int, float]:
    """`sessions` users chatting at once; returns round trips, crossed answers, RSS while open."""
    users = []
    for _ in range(sessions):
        name = f"chat_{uuid.uuid4().hex[:10]}"
        async with http.post(f"{base}/api/register", json={"username": name, "password": PASSWORD}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/login/access-token", data={"username": name, "password": PASSWORD}) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/api/llm/model/provider", headers=headers,
                             json={"name": "openai", "api_key": "sk-bench", "metadata": {}}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"{base}/api/llm/model/config", headers=headers,
                             json={"name": "cfg", "model": "gpt-4o", "provider": "openai"}) as resp:
            assert resp.status == 200, await resp.text()
        users.append(token)
    sockets = [await http.ws_connect(f"{ws_base}/frontend/ws?token={t}&session_id={uuid.uuid4()}") for t in users]
    crossed = 0
    counter = iter(range(10**9))

    async def receive_answer(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        while True:
            msg = await ws.receive(timeout=30)
            frame = json.loads(msg.data)
            if frame.get("type") == "agent_response":
                return frame  # type: ignore[no-any-return]

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def talk(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal crossed, errors
        while time.perf_counter() < deadline:
            text = f"msg-{next(counter)}-{uuid.uuid4().hex[:6]}"
            started = time.perf_counter()
            await ws.send_str(json.dumps({"message": text, "provider": "openai", "llm_name": "cfg", "files": []}))
            try:
                frame = await receive_answer(ws)
            except Exception:
                errors += 1
                continue
            answer = frame["response"]["response"]
            if not answer.get("is_success"):
                errors += 1
                continue
            if text not in str(answer.get("response")):
                crossed += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(talk(ws) for ws in sockets))
    elapsed = time.perf_counter() - started
    rss = rss_mb(pid)
    for ws in sockets:
        await ws.close()
    return Result.of(f"WS chat round trip ({sessions} sessions)", latencies, elapsed, errors, sessions), crossed, rss


def print_row(r: Result) -> None:
    ratio = r.get("ratio_to_bare_asyncpg")
    extra = f"  x{ratio:.2f} of bare asyncpg" if isinstance(ratio, float) else ""
    print(f"{r['name']:<44} c={r['concurrency']:<4} {r['rps']:>9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}{extra}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: a temporary embedded one)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument("--out", default="bench-results.json")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="run only these groups of scenarios (the bare endpoints run with `http`)")
    args = parser.parse_args()

    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-", args.dsn)
        tmp, dsn, router, port = world.tmp, world.dsn, world.router, world.port
        bare_port = free_port()
        env = {**os.environ, **world.service_env()}
        service = subprocess.Popen([sys.executable, "-m", "genai_backend"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=open(tmp / "service.log", "w"))
        stack.callback(lambda: (service.send_signal(signal.SIGTERM), service.wait(20)))
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port), dsn], cwd=ROOT)
        stack.callback(lambda: (bare.terminate(), bare.wait(10)))
        base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        await wait_ready(f"{base}/ready")
        await wait_ready(f"{bare_base}/json")
        master = await run_master_agent(router.url, api_base_url=base, master_be_api_key=world.be_key,
                                        call_back=True)
        stack.push_async_callback(master.stop)

        connector = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "results": []}
        await asyncio.sleep(1)
        report["idle_rss_mb"] = rss_mb(service.pid)
        print(f"idle RSS of the service: {report['idle_rss_mb']:.1f} MB")
        data = await load_data(http, base, dsn)
        results: list[Result] = []
        if "http" in args.only:
            results += await bench_http(http, base, bare_base, data, [32, 128], args.duration, world.be_key)
        if "login" in args.only:
            results += await bench_login(http, base, data, args.duration)
        if "files" in args.only:
            results += await bench_files(http, base, data, args.duration)
        crossed_total = 0
        if "chat" in args.only:
            for sessions in (1, 8, 32):
                result, crossed, _ = await chat_sessions(base, base.replace("http", "ws"), http, sessions,
                                                         args.duration, service.pid)
                crossed_total += crossed
                result["crossed"] = crossed
                results.append(result)
                print_row(result)
            held, crossed, rss = await chat_sessions(base, base.replace("http", "ws"), http, 128, 2, service.pid)
            report["rss_128_ws_mb"] = rss
            print_row(held)
            print(f"RSS with 128 chat sockets open: {rss:.1f} MB; crossed answers: {crossed_total + crossed}")
            report["crossed_answers"] = crossed_total + crossed

        # Ratios to the machine's limits measured in this same run, per concurrency level.
        for r in results:
            bare_rows = [b for b in results if b["name"] == "bare asyncpg SELECT 1" and b["concurrency"] == r["concurrency"]]
            json_rows = [b for b in results if b["name"] == "bare json" and b["concurrency"] == r["concurrency"]]
            if bare_rows and bare_rows[0]["rps"]:
                r["ratio_to_bare_asyncpg"] = r["rps"] / bare_rows[0]["rps"]
            if json_rows and json_rows[0]["rps"]:
                r["ratio_to_bare_json"] = r["rps"] / json_rows[0]["rps"]
        report["results"] = results
        idle = next((r for r in results if r["name"] == "GET /health (idle)"), None)
        busy = next((r for r in results if r["name"] == "GET /health (64 logins)"), None)
        if idle and busy:
            report["health_p99_ratio_during_logins"] = busy["p99_ms"] / idle["p99_ms"]
        Path(args.out).write_text(json.dumps(report, indent=2, default=float))
        print("\n| scenario | c | req/s | p50 ms | p99 ms | errors | x bare asyncpg | x bare json |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(f"| {r['name']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['errors']} | {r.get('ratio_to_bare_asyncpg', float('nan')):.2f} | "
                  f"{r.get('ratio_to_bare_json', float('nan')):.2f} |")
        for key in ("idle_rss_mb", "rss_128_ws_mb", "crossed_answers", "health_p99_ratio_during_logins"):
            if key in report:
                print(f"{key}: {report[key]:.2f}" if isinstance(report[key], float) else f"{key}: {report[key]}")
        print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
