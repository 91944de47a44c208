"""Real `genai-backend` processes on one database, for the scaling tests and scripts/bench_scale.py."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

# With an external database the router's published default key is refused at start (README).
TEST_BE_KEY = "instances-test-key"



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Instance:
    """One service process; `url` is its base URL, its log goes to `<workdir>/<name>.log`."""

    def __init__(self, name: str, dsn: str, router_url: str, secret: str, workdir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, "SQLALCHEMY_ASYNC_DATABASE_URI": dsn, "SECRET_KEY": secret,
                    "HOST": "127.0.0.1", "PORT": str(self.port), "ROUTER_WS_URL": router_url,
                    "GENAI_DATA_DIR": str(workdir / f"{name}-data"),
                    "DEFAULT_FILES_FOLDER_NAME": str(workdir / "files"), "CELERY_BEAT_INTERVAL_MINUTES": "60",
                    "DB_POOL_SIZE": "4", "MASTER_BE_API_KEY": TEST_BE_KEY, **(extra_env or {})}
        for name_ in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
            self.env.pop(name_, None)
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "genai_backend", env=self.env, cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.returncode is None, f"{self.name} exited: {self.log_tail()}"
            try:
                async with http.get(self.url + "/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.name} never became ready: {self.log_tail()}")

    async def ready(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(self.url + "/ready") as resp:
            body: dict[str, Any] = await resp.json()
            return body

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def leaders(instances: list[Instance], http: aiohttp.ClientSession) -> list[Instance]:
    """The live instances whose /ready says they lead."""
    found = []
    for instance in instances:
        if not instance.alive:
            continue
        try:
            if (await instance.ready(http)).get("leader"):
                found.append(instance)
        except aiohttp.ClientError:
            continue
    return found


async def wait_for_leader(instances: list[Instance], http: aiohttp.ClientSession, timeout: float = 10,
                          interval: float = 0.01) -> Instance:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await leaders(instances, http)
        assert len(found) <= 1, f"two leaders: {[i.name for i in found]}"
        if found:
            return found[0]
        await asyncio.sleep(interval)
    raise TimeoutError("no instance leads")
