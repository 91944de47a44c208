"""Limits that hold for the service as a whole: sockets per user, login and registration throttling,
the password-hash queue, and the hashing worker processes' lifetime."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.auth import passwords
from genai_backend.config import Settings
from genai_backend.fairqueue import FairQueue, QueueFull
from genai_backend.quotas import BLOCKS
from tests.conftest import PASSWORD, User, login, register_user, with_settings
from tests.service_process import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _login_status(client: TestClient, username: str, password: str) -> tuple[int, Any, dict[str, str]]:
    resp = await client.post("/api/login/access-token", data={"username": username, "password": password})
    return resp.status, await resp.json(), dict(resp.headers)


# --- login and registration throttling ---------------------------------------------------------

@pytest.fixture
def throttled(settings: Settings) -> Settings:
    return with_settings(settings, login_max_failures_per_account=3, login_max_failures_per_address=6,
                         login_throttle_window=120.0, register_max_per_address=3)


async def test_login_after_too_many_failures_for_account_is_429(aiohttp_client: Any, throttled: Settings) -> None:
    client = await aiohttp_client(create_app(throttled))
    await register_user(client, "alice")
    await register_user(client, "bob")
    for _ in range(3):
        assert (await _login_status(client, "alice", "Wrong!pass1"))[0] == 400
    status, body, headers = await _login_status(client, "alice", PASSWORD)  # even the right password
    assert status == 429, body
    assert body == {"detail": "Too many login attempts. Try again later"}
    assert 1 <= int(headers["Retry-After"]) <= 120
    # The same account under another spelling (fullwidth) is the same account.
    assert (await _login_status(client, "ａｌｉｃｅ", PASSWORD))[0] == 429
    assert await login(client, "bob")  # others are not affected


async def test_login_success_resets_account_count(aiohttp_client: Any, throttled: Settings) -> None:
    client = await aiohttp_client(create_app(throttled))
    await register_user(client, "alice")
    for _ in range(2):
        for _ in range(2):
            assert (await _login_status(client, "alice", "Wrong!pass1"))[0] == 400
        assert await login(client, "alice")


async def test_login_after_too_many_failures_from_address_is_429(aiohttp_client: Any, throttled: Settings) -> None:
    client = await aiohttp_client(create_app(throttled))
    await register_user(client, "alice")
    # Unknown accounts count too: guessing names is what the address limit is for.
    for name in ("n1", "n2", "n3", "n4", "n5", "n6"):
        assert (await _login_status(client, name, "Wrong!pass1"))[0] == 400
    status, body, headers = await _login_status(client, "alice", PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) >= 1, body


async def test_login_throttle_is_shared_by_instances(aiohttp_client: Any, throttled: Settings) -> None:
    first = await aiohttp_client(create_app(throttled))
    second = await aiohttp_client(create_app(throttled))
    await register_user(first, "alice")
    for client in (first, second, first):
        assert (await _login_status(client, "alice", "Wrong!pass1"))[0] == 400
    assert (await _login_status(second, "alice", PASSWORD))[0] == 429


async def test_login_window_over_allows_again(aiohttp_client: Any, throttled: Settings, db: Any) -> None:
    client = await aiohttp_client(create_app(throttled))
    await register_user(client, "alice")
    for _ in range(4):
        await _login_status(client, "alice", "Wrong!pass1")
    await db.execute("UPDATE login_attempts SET window_start = window_start - interval '121 seconds'")
    # The process remembers the refusal until the window it was told ends: time moves for it too.
    client.app[BLOCKS]._until.clear()
    assert await login(client, "alice")


async def test_register_too_often_from_address_is_429(aiohttp_client: Any, throttled: Settings, db: Any) -> None:
    client = await aiohttp_client(create_app(throttled))
    for name in ("a", "b", "c"):
        await register_user(client, name)
    resp = await client.post("/api/register", json={"username": "d", "password": PASSWORD})
    assert resp.status == 429
    assert await resp.json() == {"detail": "Too many registrations from this address. Try again later"}
    assert int(resp.headers["Retry-After"]) >= 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'd'") == 0


# --- the password-hash queue ---------------------------------------------------------------------

async def test_hash_queue_gives_turns_by_key_and_is_bounded() -> None:
    queue = FairQueue(max_waiting=5, per_key=3)
    order: list[str] = []
    await queue.acquire("flood", slots=1)  # the one worker is busy

    async def wait(key: str) -> None:
        await queue.acquire(key, slots=1)
        order.append(key)

    tasks = [asyncio.create_task(wait(k)) for k in ("flood", "flood", "flood", "other")]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await queue.acquire("flood", slots=1)  # its share is full; others still get in
    tasks.append(asyncio.create_task(wait("third")))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await queue.acquire("late", slots=1)  # everything is full
    for _ in range(5):
        queue.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    # FIFO would have served "other" last, behind the whole flood.
    assert order == ["flood", "other", "third", "flood", "flood"]
    queue.release()
    assert queue._running == 0 and queue._waiting == 0


async def test_login_flood_beyond_queue_is_503(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, password_queue_max=1,
                                                           login_max_failures_per_account=0,
                                                           login_max_failures_per_address=0)))
    try:
        await register_user(client, "alice")
        results = await asyncio.gather(*(_login_status(client, "alice", "Wrong!pass1") for _ in range(12)))
    finally:
        passwords.set_queue_limit(Settings(secret_key="x").password_queue_max)
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) == {400, 503}, statuses
    busy = next(r for r in results if r[0] == 503)
    assert busy[1] == {"detail": "Too many logins in progress. Try again in a moment"}
    assert busy[2]["Retry-After"] == "1"


# --- the socket cap, across two real service processes ------------------------------------------

@asynccontextmanager
async def _service(database_dsn: str, tmp: Path, secret: str, name: str) -> AsyncIterator[tuple[str, Any]]:
    port = _free_port()
    env = {**os.environ, "SQLALCHEMY_ASYNC_DATABASE_URI": database_dsn, "SECRET_KEY": secret,
           "MASTER_BE_API_KEY": "test-key::master_server_be", "PORT": str(port), "HOST": "127.0.0.1",
           "ROUTER_WS_URL": "ws://127.0.0.1:1/ws", "DEFAULT_FILES_FOLDER_NAME": str(tmp / "files"),
           "MAX_SOCKETS_PER_USER": "2", "CELERY_BEAT_INTERVAL_MINUTES": "60"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "genai_backend", env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=open(tmp / f"{name}.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, base, proc, tmp / f"{name}.log")
        yield base, proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _handshake(http: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientWebSocketResponse | int:
    try:
        return await http.ws_connect(f"{base.replace('http', 'ws')}/frontend/ws?token={token}")
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def test_socket_cap_holds_across_processes(database_dsn: str, tmp_path: Path, settings: Settings,
                                                 client: TestClient, user: User) -> None:
    async with _service(database_dsn, tmp_path, settings.secret_key, "a") as (base_a, _), \
            _service(database_dsn, tmp_path, settings.secret_key, "b") as (base_b, proc_b):
        async with aiohttp.ClientSession() as http:
            on_a = await _handshake(http, base_a, user.token)
            on_b = await _handshake(http, base_b, user.token)
            assert not isinstance(on_a, int) and not isinstance(on_b, int)
            for base in (base_a, base_b):
                refused = await _handshake(http, base, user.token)
                assert refused == 429
            # A closed socket frees its slot at once.
            await on_a.close()
            again = await _handshake(http, base_a, user.token)
            assert not isinstance(again, int)
            assert await _handshake(http, base_b, user.token) == 429
            # A process killed outright: its slot stops counting within the slot TTL (8 s).
            proc_b.kill()
            await proc_b.wait()
            deadline = time.monotonic() + 30
            while (taken := await _handshake(http, base_a, user.token)) == 429:
                assert time.monotonic() < deadline, "the killed process's slot never freed"
                await asyncio.sleep(0.5)
            assert not isinstance(taken, int)
            await again.close()
            await taken.close()
            await on_b.close()


async def test_socket_cap_refusal_is_json_429_before_upgrade(aiohttp_client: Any, settings: Settings,
                                                             user: User) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, max_sockets_per_user=1)))
    first = await client.ws_connect(f"/frontend/ws?token={user.token}")
    resp = await client.get(f"/frontend/ws?token={user.token}",
                            headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert resp.status == 429
    assert await resp.json() == {"detail": "Too many open sockets: at most 1 per user"}
    assert int(resp.headers["Retry-After"]) >= 1
    await first.close()


# --- hashing worker processes --------------------------------------------------------------------

_HASHING_PARENT = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    import psutil
    from genai_backend.auth.passwords import hash_password

    # As in a terminal's foreground: a shell without job control starts background commands (and
    # so a test run started with `&`, and its children) with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    async def main():
        await hash_password("Str0ng!pass")
        kids = [p.pid for p in psutil.Process().children(recursive=True)]
        print(" ".join(map(str, kids)), flush=True)
        while True:
            await asyncio.sleep(1)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("parent interrupted", file=sys.stderr, flush=True)
""")


def _start_hashing_parent(stderr: Path | None = None) -> tuple[subprocess.Popen[str], list[int]]:
    # stderr to a file, not a pipe: the workers inherit it, so a pipe's end would wait for them too.
    with open(stderr or os.devnull, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _HASHING_PARENT], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    workers = [int(pid) for pid in line.split()]
    assert workers, stderr.read_text() if stderr else "no worker pids"
    return proc, workers


def _tree(pids: list[int]) -> str:
    """What the processes are doing, for a failure message."""
    states = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            states.append(f"{pid} {process.status()} {' '.join(process.cmdline())[:80]}")
        except psutil.Error:
            states.append(f"{pid} gone")
    return "; ".join(states)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    return alive


def test_hashing_workers_die_with_killed_parent() -> None:
    proc, workers = _start_hashing_parent()
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(workers, 10) == []
    finally:
        for pid in workers:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_hashing_workers_print_nothing_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "stderr.txt"
    proc, workers = _start_hashing_parent(log)
    try:
        # Ctrl-C: SIGINT to the whole foreground process group, workers included.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after Ctrl-C: {_tree([proc.pid, *workers])}; "
                                 f"stderr: {log.read_text()[-2000:]}") from None
        stderr = log.read_text()
        assert "parent interrupted" in stderr
        assert "KeyboardInterrupt" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
        assert _wait_gone(workers, 10) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
