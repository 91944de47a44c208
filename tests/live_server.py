"""The real app on a real port, served from its own thread, for synchronous clients (browser, fuzzer)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from genai_backend.app import create_app
from genai_backend.config import Settings


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:<port>) while the app serves in a background loop."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings), shutdown_timeout=2)
    ready = threading.Event()
    url: list[str] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url.append(f"http://127.0.0.1:{port}")

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("live server did not start")
    try:
        yield url[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
