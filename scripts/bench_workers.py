"""Throughput of `--workers 2` against `--workers 1`, in one run, on the same database and data.

    uv run python scripts/bench_workers.py [--duration 5] [--workers 1 2] [--generators 2]

Starts a temporary embedded PostgreSQL and the router double (benchkit), then for each worker
count the service as a real `genai-backend --workers N` process, loads the data of bench.py (a
user with 50 agents, 10 flows, 5 MCP servers, 5 A2A cards), and drives the two cached catalogue
reads from `--generators` load-generator processes (raw keep-alive sockets by default, or the
aiohttp client; every response checked). It also
prints the CPU seconds the service processes, PostgreSQL and the load generators used during each scenario:
on a 2-core machine they share the cores, and that is where the time goes.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil
from bench import load_data
from benchkit import ROOT, percentile, start_world, wait_ready

from tests.router_double import DEFAULT_BE_KEY


async def generate(url: str, headers: dict[str, str], expect: int, concurrency: int, duration: float) -> dict[str, Any]:
    """One load-generator process: `concurrency` loops of GET `url` for `duration` seconds."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        deadline = time.perf_counter() + duration

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with http.get(url, headers=headers) as resp:
                        body = await resp.json()
                        ok = resp.status == 200 and _size(body) == expect
                except Exception:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed}


async def generate_raw(url: str, headers: dict[str, str], expect: int, concurrency: int,
                       duration: float) -> dict[str, Any]:
    """The same load from raw keep-alive connections: a fixed request, each answer compared byte for
    byte with the first one (checked in full with `expect`), so the generator costs far less CPU
    per request than the aiohttp client and leaves the cores to the service."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    latencies: list[float] = []
    errors = 0
    reference: list[bytes] = []
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                body = await reader.readexactly(length)
                if not reference and head.startswith(b"HTTP/1.1 200 ") and _size(json.loads(body)) == expect:
                    reference.append(body)
                if head.startswith(b"HTTP/1.1 200 ") and reference and body == reference[0]:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "elapsed": time.perf_counter() - started}


def _size(body: Any) -> int:
    return int(body["count_active_connections"]) if isinstance(body, dict) else len(body)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _postgres(pgdata: str) -> list[psutil.Process]:
    """The PostgreSQL server and backends of this run: each cached answer costs one indexed query."""
    found = []
    for p in psutil.process_iter(attrs=["name", "cmdline"]):
        if p.info["name"] == "postgres":
            found.append(p)
    root = [p for p in found if pgdata in " ".join(p.info["cmdline"] or [])]
    return [*root, *(c for r in root for c in r.children(recursive=True))]


async def drive(url: str, headers: dict[str, str], expect: int, concurrency: int, duration: float,
                generators: int, service_pid: int, raw: bool, pgdata: str) -> dict[str, Any]:
    per = max(1, concurrency // generators)
    mode = "--generate-raw" if raw else "--generate"
    args = [sys.executable, __file__, mode, url, json.dumps(headers), str(expect), str(per), str(duration)]
    service = _tree(service_pid)
    cpu_before = _cpu(service)
    postgres = _postgres(pgdata)
    pg_before = _cpu(postgres)
    # Results through files: tens of thousands of latencies would fill a pipe nobody reads yet.
    outputs = [tempfile.TemporaryFile() for _ in range(generators)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=out) for out in outputs]
    gens = [psutil.Process(p.pid) for p in procs]
    gen_cpu = [0.0] * generators
    while any(p.poll() is None for p in procs):
        for i, g in enumerate(gens):
            try:
                t = g.cpu_times()
                gen_cpu[i] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        await asyncio.sleep(0.2)
    outs = []
    for out in outputs:
        out.seek(0)
        outs.append(json.loads(out.read()))
        out.close()
    latencies = [x for o in outs for x in o["latencies"]]
    elapsed = max(o["elapsed"] for o in outs)
    return {"requests": len(latencies), "errors": sum(o["errors"] for o in outs),
            "rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "service_cpu_s": _cpu(service) - cpu_before,
            "postgres_cpu_s": _cpu(postgres) - pg_before,
            "generator_cpu_s": sum(gen_cpu), "elapsed_s": elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--client", choices=("aiohttp", "raw"), default="raw",
                        help="load generator: raw keep-alive sockets (cheap) or the aiohttp client")
    parser.add_argument("--out", default="bench-workers.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-workers-", None)
        base = f"http://127.0.0.1:{world.port}"
        for workers in args.workers:
            env = {**os.environ, **world.service_env(), "WORKERS": str(workers)}
            log = open(world.tmp / f"service-{workers}.log", "w")
            service = subprocess.Popen([sys.executable, "-m", "genai_backend"], env=env, cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=log)
            try:
                await wait_ready(f"{base}/ready")
                async with aiohttp.ClientSession() as http:
                    data = await load_data(http, base, world.dsn)
                await asyncio.sleep(1)
                scenarios = [
                    ("GET /api/agents/active (X-API-KEY)",
                     f"{base}/api/agents/active?agent_type=all&user_id={data['user_id']}", {"X-API-KEY": DEFAULT_BE_KEY},
                     80),
                    ("GET /api/agents/", f"{base}/api/agents/", data["headers"], 50),
                ]
                for concurrency in args.concurrency:
                    for name, url, headers, expect in scenarios:
                        row = {"workers": workers, "name": name, "concurrency": concurrency,
                               **await drive(url, headers, expect, concurrency, args.duration, args.generators,
                                             service.pid, args.client == "raw", str(world.tmp / "pgdata"))}
                        rows.append(row)
                        print(f"workers={workers} {name:<36} c={concurrency:<4} {row['rps']:>8.1f} req/s  "
                              f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}  "
                              f"CPU s: service {row['service_cpu_s']:.1f}, postgres {row['postgres_cpu_s']:.1f}, "
                              f"load {row['generator_cpu_s']:.1f}",
                              flush=True)
            finally:
                service.send_signal(signal.SIGTERM)
                service.wait(60)
                log.close()
    print("\n| scenario | c | workers | req/s | p50 ms | p99 ms | errors | CPU s: service | postgres | load | x workers=1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        one = next((b for b in rows if b["workers"] == 1 and b["name"] == r["name"]
                    and b["concurrency"] == r["concurrency"]), None)
        ratio = r["rps"] / one["rps"] if one and one["rps"] else float("nan")
        print(f"| {r['name']} | {r['concurrency']} | {r['workers']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['errors']} | {r['service_cpu_s']:.1f} | {r['postgres_cpu_s']:.1f} | "
              f"{r['generator_cpu_s']:.1f} | {ratio:.2f} |")
    with open(args.out, "w") as fh:
        json.dump({"machine": {"cpus": os.cpu_count()}, "results": rows}, fh, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--generate", "--generate-raw"):
        url, headers, expect, concurrency, duration = sys.argv[2:7]
        generator = generate_raw if sys.argv[1] == "--generate-raw" else generate
        result = asyncio.run(generator(url, json.loads(headers), int(expect), int(concurrency), float(duration)))
        print(json.dumps(result))
    else:
        asyncio.run(main())
