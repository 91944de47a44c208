"""What metrics and tracing cost on the hot path, measured in one run (issue: observability).

    uv run python scripts/bench_observability.py [--dsn postgresql://...] [--duration 3] [--rounds 3]

Starts three `genai-backend` processes on one database: METRICS_ENABLED=false, metrics on (the
default), and metrics on with tracing exporting over OTLP/HTTP to a local sink that accepts and
drops everything. Drives `GET /api/agents/active?agent_type=all` (X-API-KEY + user_id, as the
master agent calls it) on each in turn, rotating the order every round so drift of the shared
machine spreads over all three, and prints requests/s and p50/p99 of every variant as a ratio
to the metrics-off variant (medians over the rounds). On a shared machine throughput swings
with the neighbours' load, so it also prints the service's own CPU time per request (user +
system of that process, from /proc), which other processes barely move: the cost figure to trust.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import psutil

# benchkit first: it puts the project root on sys.path for `tests`.
from bench import drive, get_json, load_data
from benchkit import ROOT, free_port, start_world, wait_ready

from tests.router_double import DEFAULT_BE_KEY

# Accepts OTLP/HTTP exports and throws them away, in its own process (not the load generator's).
OTLP_SINK = r'''
import sys
from aiohttp import web

async def traces(request):
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")

async def ok(request):
    return web.Response(text="ok")

app = web.Application(client_max_size=64 * 1024 * 1024)
app.router.add_post("/v1/traces", traces)
app.router.add_get("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''

VARIANTS: dict[str, dict[str, str]] = {
    "metrics off": {"METRICS_ENABLED": "false"},
    "metrics on": {"METRICS_ENABLED": "true"},
    "metrics + tracing": {"METRICS_ENABLED": "true"},  # + the OTLP endpoint, set in main()
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: a temporary embedded one)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--control", action="store_true",
                        help="add a second metrics-off process: the spread between two identical ones is the noise")
    args = parser.parse_args()
    if args.control:
        VARIANTS["metrics off (control)"] = {"METRICS_ENABLED": "false"}

    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-obs-", args.dsn)
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, "-c", OTLP_SINK, str(sink_port)], cwd=ROOT)
        stack.callback(lambda: (sink.terminate(), sink.wait(10)))
        VARIANTS["metrics + tracing"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
        bases: dict[str, str] = {}
        processes: dict[str, psutil.Process] = {}
        for name, extra in VARIANTS.items():
            port = free_port()
            env = {**os.environ, **world.service_env(), "PORT": str(port), **extra}
            for key in [k for k in env if k.startswith("OTEL_") and k not in extra]:
                del env[key]
            log = open(world.tmp / f"service-{port}.log", "w")
            service = subprocess.Popen([sys.executable, "-m", "genai_backend"], env=env, cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=log)
            stack.callback(lambda s=service: (s.send_signal(signal.SIGTERM), s.wait(20)))
            bases[name] = f"http://127.0.0.1:{port}"
            processes[name] = psutil.Process(service.pid)
        for base in bases.values():
            await wait_ready(f"{base}/ready")
        await wait_ready(f"http://127.0.0.1:{sink_port}/")

        http = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        data = await load_data(http, bases["metrics off"], world.dsn)
        key = {"X-API-KEY": DEFAULT_BE_KEY}

        def active(base: str) -> Any:
            url = f"{base}/api/agents/active?agent_type=all&user_id={data['user_id']}"
            return lambda: get_json(http, url, lambda b: b["count_active_connections"] == 80, headers=key)

        # Warm-up: caches filled, connections opened, code paths imported.
        for base in bases.values():
            await drive("warm-up", args.concurrency, 1.0, active(base))
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in bases}
        names = list(bases)
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                cpu = processes[name].cpu_times()
                result = await drive(name, args.concurrency, args.duration, active(bases[name]))
                used = processes[name].cpu_times()
                assert result["errors"] == 0, result
                seconds = (used.user + used.system) - (cpu.user + cpu.system)
                result["cpu_us_per_request"] = 1e6 * seconds / max(1, result["requests"])
                rows[name].append(result)
                print(f"round {round_ + 1} {name:<22} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms  CPU {result['cpu_us_per_request']:6.1f} us/request", flush=True)

        print(f"\nGET /api/agents/active, c={args.concurrency}, median of {args.rounds} rounds of {args.duration:g} s")
        baseline = statistics.median(r["rps"] for r in rows["metrics off"])
        cpu_baseline = statistics.median(r["cpu_us_per_request"] for r in rows["metrics off"])
        for name, results in rows.items():
            rps = statistics.median(r["rps"] for r in results)
            p50 = statistics.median(r["p50_ms"] for r in results)
            p99 = statistics.median(r["p99_ms"] for r in results)
            cpu = statistics.median(r["cpu_us_per_request"] for r in results)
            print(f"{name:<22} {rps:9.1f} req/s  x{rps / baseline:.3f}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                  f"CPU {cpu:6.1f} us/request  x{cpu / cpu_baseline:.3f} of metrics off "
                  f"(cost {100 * (cpu / cpu_baseline - 1):+.1f} %)")


if __name__ == "__main__":
    asyncio.run(main())
