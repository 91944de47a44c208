"""Discovery and refresh timings (the tool-discovery issue's closing figures).

    uv run python scripts/bench_refresh.py [--dsn postgresql://...] [--timeout 10] [--good 45] [--hanging 5]

1. Discovery: `POST /api/mcp/servers` for a local MCP server with 20 tools (the first call after
   start-up, which imports the MCP SDK, then the median of nine more registrations by other users).
2. Refresh: one cycle of the periodic refresh over `good + hanging` registered servers, where the
   hanging ones accept TCP and never answer (each costs one per-server timeout).

The MCP servers run in a child process, so their CPU does not count against the service's loop.
The service runs in this process on the real app (create_app + cleanup contexts), against the
embedded PostgreSQL unless --dsn is given.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genai_backend.app import create_app  # noqa: E402
from genai_backend.auth.tokens import issue_user_token  # noqa: E402
from genai_backend.config import SETTINGS, Settings  # noqa: E402
from genai_backend.db import POOL, queries  # noqa: E402
from genai_backend.discovery.client import DISCOVERY  # noqa: E402
from genai_backend.jobs.refresh import CONCURRENCY, refresh_tools  # noqa: E402

SERVERS = r'''
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from tests.tool_servers import hanging_server, mcp_server

async def main(good, hanging):
    twenty = mcp_server(20)
    servers = [mcp_server(3) for _ in range(good)]
    hangs = [hanging_server() for _ in range(hanging)]
    for server in [twenty, *servers, *hangs]:
        await server.start()
    print(json.dumps({"twenty": twenty.url, "good": [s.url for s in servers],
                      "hanging": [h.url + "mcp" for h in hangs]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in [twenty, *servers, *hangs]:
        await server.stop()

asyncio.run(main(int(sys.argv[2]), int(sys.argv[3])))
'''


async def make_user(app: Any) -> dict[str, str]:
    user_id = uuid.uuid4()
    async with app[POOL].acquire() as conn:
        await queries.create_user(conn, user_id=user_id, username=f"bench_{user_id.hex[:8]}", password="x")
    return {"Authorization": f"Bearer {issue_user_token(user_id, app[SETTINGS].secret_key)}"}


async def register(http: aiohttp.ClientSession, base: str, headers: dict[str, str], url: str) -> float:
    started = time.perf_counter()
    async with http.post(f"{base}/api/mcp/servers", json={"server_url": url}, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return time.perf_counter() - started


async def run(dsn: str, timeout: float, good: int, hanging: int) -> dict[str, Any]:
    child = subprocess.Popen([sys.executable, "-c", SERVERS, str(ROOT), str(good), str(hanging)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        urls = json.loads(child.stdout.readline())
        settings = Settings(secret_key=secrets.token_hex(32), database_dsn=dsn, data_dir=Path(tempfile.mkdtemp()),
                            start_router=False, start_jobs=False, tool_refresh_timeout=timeout)
        app = create_app(settings)
        async with TestServer(app) as server, aiohttp.ClientSession() as http:
            base = str(server.make_url("")).rstrip("/")
            # The first one pays for importing the MCP SDK (~1.3 s; lazy, so start-up stays fast).
            cold = await register(http, base, await make_user(app), urls["twenty"])
            warm = [await register(http, base, await make_user(app), urls["twenty"]) for _ in range(9)]
            # The refresh set: `good` answering servers and `hanging` ones, one registration each.
            await app[POOL].execute("DELETE FROM mcpservers")
            headers = await make_user(app)
            for url in urls["good"]:
                await register(http, base, headers, url)
            user_id = await app[POOL].fetchval("SELECT creator_id FROM mcpservers WHERE server_url = $1",
                                               urls["good"][0])
            for url in urls["hanging"]:
                await app[POOL].execute("INSERT INTO mcpservers (id, server_url, creator_id, is_active) "
                                        "VALUES ($1, $2, $3, true)", uuid.uuid4(), url, user_id)
            cycles = []
            for _ in range(3):
                report = await refresh_tools(app[POOL], app[DISCOVERY], timeout)
                assert len(report.unreachable) == hanging and len(report.reachable) == good, report
                cycles.append(report.seconds)
        return {
            "discovery_20_tools_first_s": round(cold, 3),
            "discovery_20_tools_warm_median_s": round(statistics.median(warm), 3),
            "refresh_servers": good + hanging, "refresh_hanging": hanging, "per_server_timeout_s": timeout,
            "concurrency": CONCURRENCY, "refresh_cycle_s": [round(c, 2) for c in cycles],
        }
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing, migrated PostgreSQL (default: embedded, throw-away)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-server timeout (TOOL_REFRESH_TIMEOUT)")
    parser.add_argument("--good", type=int, default=45, help="answering servers in the refresh")
    parser.add_argument("--hanging", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        dsn = args.dsn
        if dsn is None:
            from genai_backend.migrations import apply_migrations
            from tests.pg import embedded_server, throwaway_database

            server = stack.enter_context(embedded_server())
            dsn = stack.enter_context(throwaway_database(server.dsn))
            apply_migrations(dsn)
        print(json.dumps(asyncio.run(run(dsn, args.timeout, args.good, args.hanging)), indent=2))


if __name__ == "__main__":
    main()
