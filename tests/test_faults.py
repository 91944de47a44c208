"""Faults: the database restarted under a write load, and a graceful shutdown with work in flight."""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.embedded_db import EmbeddedPostgres
from tests.conftest import PASSWORD
from tests.service_process import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


async def test_database_restart_under_writes_loses_no_acknowledged_write(
        aiohttp_client: Any, own_postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    settings = Settings(secret_key=secrets.token_hex(32), database_dsn=own_postgres.dsn, data_dir=tmp_path / "d",
                        files_dir=tmp_path / "f", apply_migrations=False, start_router=False, start_jobs=False,
                        db_pool_min=1, db_pool_max=4)
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/api/register", json={"username": "writer", "password": PASSWORD})
    assert resp.status == 200
    token = (await (await client.post("/api/login/access-token",
                                      data={"username": "writer", "password": PASSWORD})).json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    acknowledged: list[str] = []
    outage_answers: list[tuple[int, Any]] = []
    down = asyncio.Event()
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            agent_id = str(uuid.uuid4())
            try:
                resp = await asyncio.wait_for(client.post("/api/agents/register", headers=headers, json={
                    "id": agent_id, "name": "w", "description": "d", "input_parameters": {}}), 10)
            except TimeoutError:
                outage_answers.append((0, "hang"))
                continue
            body = await resp.json()
            if resp.status == 200:
                acknowledged.append(agent_id)
            elif down.is_set():
                outage_answers.append((resp.status, body))
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(writer()) for _ in range(4)]
    await asyncio.sleep(0.5)
    before = len(acknowledged)
    await asyncio.to_thread(own_postgres.stop)
    down.set()
    await asyncio.sleep(1.0)
    resp = await client.get("/ready")
    assert resp.status == 503
    assert (await resp.json())["database"] == "unavailable"
    await asyncio.to_thread(own_postgres.start)
    restarted = time.monotonic()
    while True:
        ready = await client.get("/ready")
        if ready.status == 200:
            break
        assert time.monotonic() - restarted < 5, "service did not recover within 5 s"
        await asyncio.sleep(0.1)
    recovered_after = len(acknowledged)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)

    assert before > 0 and len(acknowledged) > recovered_after, "writes did not resume after the restart"
    assert outage_answers, "no request hit the outage"
    for status, body in outage_answers:
        assert status == 503, (status, body)
        assert body == {"detail": "Database unavailable, try again later"}
    conn = await asyncpg.connect(own_postgres.dsn)
    try:
        stored = {str(r["id"]) for r in await conn.fetch("SELECT id FROM agents")}
    finally:
        await conn.close()
    assert set(acknowledged) <= stored


def _postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            return True
    return False


async def test_sigterm_closes_sockets_removes_partial_uploads_and_stops_postgres(tmp_path: Path) -> None:
    port = 18000 + os.getpid() % 1000
    data_dir, files_dir = tmp_path / "data", tmp_path / "files"
    env = {**os.environ, "GENAI_DATA_DIR": str(data_dir), "DEFAULT_FILES_FOLDER_NAME": str(files_dir),
           "PORT": str(port), "HOST": "127.0.0.1", "ROUTER_WS_URL": "ws://127.0.0.1:1/ws"}
    for name in ("SECRET_KEY", "POSTGRES_HOST", "SQLALCHEMY_ASYNC_DATABASE_URI"):
        env.pop(name, None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "genai_backend", env=env, cwd=ROOT,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / "service.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, base)
            async with http.post(f"{base}/api/register", json={"username": "u", "password": PASSWORD}) as resp:
                assert resp.status == 200
            async with http.post(f"{base}/api/login/access-token",
                                 data={"username": "u", "password": PASSWORD}) as resp:
                token = (await resp.json())["access_token"]
            sockets = [await http.ws_connect(f"{base.replace('http', 'ws')}/frontend/ws?token={token}")
                       for _ in range(3)]
            # An answered frame proves each socket's view is registered and reading; the 101 alone
            # can reach us before that, and only registered sockets get the 1001 at shutdown.
            for ws in sockets:
                await ws.send_str("{}")
                assert "error" in await ws.receive_json(timeout=15)

            async def slow_body() -> AsyncIterator[bytes]:
                head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
                        b"Content-Type: application/octet-stream\r\n\r\n")
                yield head
                for _ in range(200):
                    yield b"x" * 65536
                    await asyncio.sleep(0.05)

            upload = asyncio.create_task(http.post(
                f"{base}/files", data=slow_body(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b"}))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            codes = []
            for ws in sockets:
                msg = await ws.receive(timeout=15)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
                codes.append(ws.close_code)
            assert codes == [1001, 1001, 1001], (tmp_path / "service.log").read_text()[-4000:]
            try:
                await asyncio.wait_for(upload, 15)
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    leftovers = [p.name for p in files_dir.iterdir()] if files_dir.exists() else []
    assert leftovers == [], f"partial upload left behind: {leftovers}"
    assert not _postgres_running(data_dir / "pgdata")
