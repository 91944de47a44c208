"""Benchmark the chat round trip: N front-end sockets through the back-end, the router double and
an echo master agent (a real `genai_session` client).

    uv run python scripts/bench_chat.py [--sessions 1 8 32] [--duration 5] [--think-ms 0] [--no-call-back]
                                        [--invoker aiohttp|library] [--dsn postgresql://...] [--profile F]

The back-end runs as its own process (uvloop, as in production); the load generator, the router
double and the master agent share this one. By default the master agent behaves like the real
one: it reads the history back (`GET /api/chat`), lists the tools (`GET /api/agents/active`) and
logs its invocation and result (two agent-log events for the back-end's bus), then echoes the
user's message. Each session sends its next message as soon as the answer arrives (closed
loop), so at 8 and more sessions the machine is saturated and latencies are mostly queueing;
`--think-ms` makes the master agent take that long (±50 %), like an LLM, for an unsaturated load.
Reported per level:

* round trips/s and client-side p50/p99 (frame sent → answer received);
* the back-end's own added latency, measured inside it: frame received → invocation sent, plus
  answer received → answer sent (p50/p99 of the sum, and p50 of each part);
* the back-end process's CPU time per round trip (everything it did, call-backs and logs included);
* crossed answers (an answer whose echo, session or request id is not the asker's) — must be 0.

`--invoker library` swaps the back-end's invoker for a throw-away `GenAISession.send()` per
request (the other option of agent-bus.md §6), to compare the two; it has no internal timings.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

# benchkit first: it puts the project root on sys.path for `tests`.
from benchkit import ROOT, percentile, start_world, wait_ready

from tests.agents_helpers import MasterCall, run_master_agent

TIMINGS_PATH = "/bench/chat-timings"
# Users are inserted directly with tokens minted from the service's key: logins are not measured
# here. The hash matches no password.
PASSWORD_HASH = "$2b$12$" + "x" * 53


# --- the back-end process ------------------------------------------------------------------------

def serve_backend() -> None:
    """The service as `genai-backend` runs it, plus a bench-only route exposing the ws timings."""
    import logging

    import uvloop
    from aiohttp import web

    from genai_backend.app import create_app
    from genai_backend.config import from_env

    timings: list[tuple[float, float]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            timing = getattr(record, "chat_timing", None)
            if timing is not None:
                timings.append(timing)

    logging.basicConfig(level=logging.WARNING)
    ws_log = logging.getLogger("genai_backend.api.ws")
    ws_log.setLevel(logging.DEBUG)
    ws_log.addHandler(Collect())
    ws_log.propagate = False

    async def take(request: web.Request) -> web.Response:
        taken = list(timings)
        timings.clear()
        return web.json_response(taken)

    settings = from_env(os.environ)
    app = create_app(settings)
    app.router.add_get(TIMINGS_PATH, take)
    if os.environ.get("BENCH_INVOKER") == "library":
        app.cleanup_ctx.append(_library_invoker_ctx)  # after invoker_ctx, whose client it reuses
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        signal.signal(signal.SIGTERM, lambda *_: (profiler.disable(), profiler.dump_stats(profile), os._exit(0)))
        profiler.enable()
    web.run_app(app, host=settings.host, port=settings.port, loop=uvloop.new_event_loop(), print=None,
                access_log=None, shutdown_timeout=5, handle_signals=not profile)


async def _library_invoker_ctx(app: Any) -> Any:
    """Swap in a throw-away `GenAISession.send()` per request (agent-bus.md §6, first option)."""
    from genai_session.session import GenAISession

    from genai_backend.bus import invoke
    from genai_backend.config import SETTINGS

    settings = app[SETTINGS]

    class LibraryInvoker(invoke.MasterInvoker):
        async def invoke(self, payload: dict[str, Any], request_id: uuid.UUID, session_id: uuid.UUID,
                         timeout: float | None = None) -> invoke.Invocation:
            session = GenAISession(api_key=f"{settings.master_be_api_key}:{request_id}",
                                   ws_url=settings.router_ws_url, log_level=60)
            session.request_id, session.session_id = str(request_id), str(session_id)
            try:
                result = await session.send(payload, client_id=invoke.MASTER_SERVER_ML,
                                            close_timeout=settings.master_agent_timeout)
            except OSError as exc:
                raise invoke.RouterUnreachable(str(exc)) from exc
            now = time.perf_counter()
            return invoke.Invocation(result.is_success, result.execution_time, result.response, now, now)

    app[invoke.INVOKER] = LibraryInvoker(settings, app[invoke.INVOKER].http)
    yield


# --- the load generator --------------------------------------------------------------------------

async def make_users(http: aiohttp.ClientSession, base: str, dsn: str, secret: str, count: int) -> list[str]:
    """Users (inserted directly, tokens minted with the service's key), each with a provider and config."""
    from genai_backend.auth.tokens import issue_user_token

    conn = await asyncpg.connect(dsn)
    tokens = []
    try:
        for _ in range(count):
            user_id = uuid.uuid4()
            await conn.execute("INSERT INTO users (id, username, password) VALUES ($1, $2, $3)",
                               user_id, f"bench_{user_id.hex[:12]}", PASSWORD_HASH)
            tokens.append(issue_user_token(user_id, secret))
    finally:
        await conn.close()
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{base}/api/llm/model/provider", headers=headers,
                             json={"name": "openai", "api_key": "sk-bench", "metadata": {}}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(f"{base}/api/llm/model/config", headers=headers,
                             json={"name": "cfg", "model": "gpt-4o", "provider": "openai"}) as resp:
            assert resp.status == 200, await resp.text()
    return tokens


def thinking_echo(seconds: float) -> Any:
    """The stub's echo after about `seconds` (uniform ±50 %) of "LLM time"; a real one takes seconds."""

    async def answer(call: MasterCall) -> dict[str, Any]:
        await asyncio.sleep(random.uniform(0.5, 1.5) * seconds)
        items = call.chat.get("items", []) if isinstance(call.chat, dict) else []
        text = next((i["content"] for i in items if i.get("sender_type") == "user"), call.kwargs["session_id"])
        return {"agents_trace": [], "response": f"echo: {text}", "is_success": True}

    return answer


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Level:
    sessions: int
    latencies: list[float] = field(default_factory=list)
    crossed: int = 0
    errors: int = 0
    request_ids: set[str] = field(default_factory=set)
    elapsed: float = 0.0
    timings: list[list[float]] = field(default_factory=list)
    backend_cpu: float = 0.0
    own_cpu: float = 0.0


async def chat(ws: aiohttp.ClientWebSocketResponse, session_id: str, text: str, level: Level | None,
               echoes_message: bool = True) -> None:
    started = time.perf_counter()
    await ws.send_str(json.dumps({"message": text, "provider": "openai", "llm_name": "cfg", "files": []}))
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"socket ended: {msg!r}")
        frame = json.loads(msg.data)
        if frame.get("type") == "agent_response":
            break
    elapsed = time.perf_counter() - started
    if level is None:
        return
    answer = frame["response"]
    if not answer["response"].get("is_success"):
        level.errors += 1
    elif (answer["response"].get("response") != f"echo: {text if echoes_message else session_id}"
          or answer["session_id"] != session_id
          or answer["request_id"] in level.request_ids):
        level.crossed += 1
    else:
        level.latencies.append(elapsed)
    level.request_ids.add(answer["request_id"])


async def run_level(http: aiohttp.ClientSession, base: str, tokens: list[str], args: argparse.Namespace,
                    backend_pid: int) -> Level:
    level = Level(len(tokens))
    ws_base = base.replace("http", "ws", 1)
    sessions = [str(uuid.uuid4()) for _ in tokens]
    sockets = [await http.ws_connect(f"{ws_base}/frontend/ws?token={t}&session_id={s}", max_msg_size=0)
               for t, s in zip(tokens, sessions)]
    # Warm-up: conversations exist, provider keys are decrypted once, connections are open.
    await asyncio.gather(*(chat(ws, s, "warm-up", None) for ws, s in zip(sockets, sessions)))
    async with http.get(base + TIMINGS_PATH) as resp:
        await resp.json()
    deadline = time.perf_counter() + args.duration

    async def talk(ws: aiohttp.ClientWebSocketResponse, session_id: str, index: int) -> None:
        # With a think time, sessions start spread out, as independent users would.
        await asyncio.sleep(random.uniform(0, args.think_ms / 1000))
        sequence = 0
        while time.perf_counter() < deadline:
            sequence += 1
            try:
                await chat(ws, session_id, f"user {index} message {sequence} {uuid.uuid4().hex[:8]}", level,
                           echoes_message=args.call_back)
            except Exception:
                level.errors += 1

    started, backend_cpu, own_cpu = time.perf_counter(), cpu_seconds(backend_pid), cpu_seconds(os.getpid())
    await asyncio.gather(*(talk(ws, s, i) for i, (ws, s) in enumerate(zip(sockets, sessions))))
    level.elapsed = time.perf_counter() - started
    level.backend_cpu = cpu_seconds(backend_pid) - backend_cpu
    level.own_cpu = cpu_seconds(os.getpid()) - own_cpu
    async with http.get(base + TIMINGS_PATH) as resp:
        level.timings = await resp.json()
    for ws in sockets:
        await ws.close()
    return level


def report(level: Level, args: argparse.Namespace) -> dict[str, Any]:
    pre = [t[0] for t in level.timings]
    post = [t[1] for t in level.timings]
    added = [a + b for a, b in zip(pre, post)]
    count = max(1, len(level.latencies))
    row = {"sessions": level.sessions, "invoker": args.invoker, "think_ms": args.think_ms,
           "call_back": args.call_back, "round_trips": len(level.latencies), "rps": len(level.latencies) / level.elapsed,
           "p50_ms": percentile(level.latencies, 0.5) * 1000, "p99_ms": percentile(level.latencies, 0.99) * 1000,
           "added_p50_ms": percentile(added, 0.5), "added_p99_ms": percentile(added, 0.99),
           "before_p50_ms": percentile(pre, 0.5), "after_p50_ms": percentile(post, 0.5),
           "backend_cpu_ms_per_round_trip": level.backend_cpu * 1000 / count,
           "load_generator_cpu_ms_per_round_trip": level.own_cpu * 1000 / count,
           "crossed": level.crossed, "errors": level.errors}
    print(f"{row['sessions']:>3} sessions: {row['rps']:7.1f} round trips/s  p50 {row['p50_ms']:7.2f} ms  "
          f"p99 {row['p99_ms']:7.2f} ms | back-end added p50 {row['added_p50_ms']:5.2f} ms "
          f"(before {row['before_p50_ms']:.2f} + after {row['after_p50_ms']:.2f})  p99 {row['added_p99_ms']:5.2f} ms | "
          f"back-end CPU {row['backend_cpu_ms_per_round_trip']:.2f} ms/round trip | "
          f"crossed {row['crossed']}  errors {row['errors']}", flush=True)
    return row


async def main(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        world = await start_world(stack, "genai-bench-chat-", args.dsn)
        tmp, dsn, router, port, secret = world.tmp, world.dsn, world.router, world.port, world.secret
        env = {**os.environ, **world.service_env(), "MASTER_AGENT_TIMEOUT": "30", "BENCH_INVOKER": args.invoker,
               "DB_POOL_SIZE": "20", **({"BENCH_PROFILE": str(Path(args.profile).resolve())} if args.profile else {})}
        backend = subprocess.Popen([sys.executable, __file__, "--serve-backend"], env=env, cwd=ROOT,
                                   stderr=open(tmp / "backend.log", "w"))
        stack.callback(lambda: (backend.send_signal(signal.SIGTERM), backend.wait(20)))
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/ready")
        master = await run_master_agent(router.url, api_base_url=base, master_be_api_key=world.be_key,
                                        call_back=args.call_back, send_logs=args.call_back,
                                        answer=thinking_echo(args.think_ms / 1000) if args.think_ms else None)
        stack.push_async_callback(master.stop)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        rows = []
        for sessions in args.sessions:
            tokens = await make_users(http, base, dsn, secret, sessions)
            rows.append(report(await run_level(http, base, tokens, args, backend.pid), args))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))
        print(f"\ninvoker {args.invoker}, think {args.think_ms:g} ms, master-agent call-backs "
              f"{'on' if args.call_back else 'off'}")
        print("| sessions | round trips/s | p50 ms | p99 ms | added p50 ms | added p99 ms | back-end CPU ms/rt | crossed |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['sessions']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['added_p50_ms']:.2f} | {r['added_p99_ms']:.2f} | {r['backend_cpu_ms_per_round_trip']:.2f} | "
                  f"{r['crossed']} |")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument("--invoker", choices=("aiohttp", "library"), default="aiohttp")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="the master agent waits this long before answering, like an LLM would (default 0)")
    parser.add_argument("--no-call-back", dest="call_back", action="store_false",
                        help="the master agent skips its GET /api/chat and /api/agents/active calls and its logs "
                             "(it cannot see the message then, and echoes the session id)")
    parser.add_argument("--dsn", help="an existing PostgreSQL (default: a temporary embedded one)")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--profile", help="cProfile the back-end process into this file")
    parser.add_argument("--serve-backend", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve_backend:
        serve_backend()
    else:
        asyncio.run(main(arguments))
