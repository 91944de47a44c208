"""What bench.py and bench_chat.py share: ports, percentiles, and the world a benchmark runs in."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.router_double import RouterDouble, RunningRouter  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


@dataclass
class World:
    tmp: Path
    dsn: str
    router: RunningRouter
    port: int
    secret: str
    # The router's published default is refused with an external database: a key of our own.
    be_key: str = "bench-key::master_server_be"

    def service_env(self) -> dict[str, str]:
        """The service's settings for a benchmark: this world's database, router and files.

        One load generator logs one account in at high concurrency: throttling and the hash queue
        bound stay in the path (same queries) but with limits it cannot reach.
        """
        return {"SQLALCHEMY_ASYNC_DATABASE_URI": self.dsn, "SECRET_KEY": self.secret, "PORT": str(self.port),
                "HOST": "127.0.0.1", "ROUTER_WS_URL": self.router.url, "MASTER_BE_API_KEY": self.be_key,
                "DEFAULT_FILES_FOLDER_NAME": str(self.tmp / "files"), "CELERY_BEAT_INTERVAL_MINUTES": "60",
                "LOGIN_MAX_FAILURES_PER_ACCOUNT": "1000000", "LOGIN_MAX_FAILURES_PER_ADDRESS": "1000000",
                "REGISTER_MAX_PER_ADDRESS": "1000000", "PASSWORD_QUEUE_MAX": "100000",
                "MAX_SOCKETS_PER_USER": "100000"}


async def start_world(stack: AsyncExitStack, prefix: str, dsn: str | None) -> World:
    """A temporary directory, PostgreSQL (embedded unless `dsn`) and the router double, all undone by `stack`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    # Registered first, so it runs last: after the service and PostgreSQL have stopped.
    stack.callback(shutil.rmtree, tmp, True)
    if dsn is None:
        from genai_backend.embedded_db import EmbeddedPostgres

        pg = EmbeddedPostgres(tmp / "pgdata")
        dsn = await asyncio.to_thread(pg.start)
        stack.callback(pg.stop, True)
    be_key = f"bench-{secrets.token_hex(8)}::master_server_be"
    router = RunningRouter(RouterDouble(master_be_api_key=be_key))
    await router.start()
    stack.push_async_callback(router.stop)
    return World(tmp, dsn, router, free_port(), secrets.token_hex(32), be_key)
