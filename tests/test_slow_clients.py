"""Slow clients: header and body read time-outs of the runner that `genai-backend` serves with (real sockets)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import orjson
import pytest
from aiohttp import web

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.server import make_runner
from tests.conftest import PASSWORD

pytestmark = pytest.mark.timeout(90)
# Generous next to the 1 s limits: the point is that the server closes them, not how fast.
CLOSED_WITHIN = 30.0


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[str, int]]:
    runner = make_runner(create_app(replace(settings, header_read_timeout=1.0, body_read_timeout=1.0)),
                         replace(settings, header_read_timeout=1.0, body_read_timeout=1.0))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN)


async def _trickle_header(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            for byte in b"X-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)

        task = asyncio.create_task(trickle())
        try:
            return await _read_until_closed(reader)
        finally:
            task.cancel()
    finally:
        writer.close()


async def test_trickling_headers_are_closed_with_408_and_others_are_served(served: tuple[str, int]) -> None:
    host, port = served
    slow = [asyncio.create_task(_trickle_header(host, port)) for _ in range(200)]
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/health") as resp:
        assert resp.status == 200
    answers = await asyncio.gather(*slow)
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert orjson.loads(body) == {"detail": "Request header read timed out"}


async def test_silent_connection_is_closed(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        assert await _read_until_closed(reader) == b""
    finally:
        writer.close()


async def test_partial_second_request_on_keep_alive_connection_is_closed(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        writer.write(b"GET /health HTTP/1.1\r\nHo")
        assert (await _read_until_closed(reader)).startswith(b"HTTP/1.1 408 ")
    finally:
        writer.close()


async def test_stalled_body_gets_408_and_the_connection_closes(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        writer.write(b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"username\": ")
        answer = await _read_until_closed(reader)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert orjson.loads(body) == {"detail": "Request body read timed out: no data for 1 s"}


async def test_slow_but_steady_body_is_not_cut(served: tuple[str, int]) -> None:
    host, port = served

    async def steady() -> AsyncIterator[bytes]:
        body = orjson.dumps({"username": "steady_sender", "password": PASSWORD})
        # Takes about 3 s in all, three times the limit, but never pauses for 1 s.
        for i in range(0, len(body), 2):
            yield body[i:i + 2]
            await asyncio.sleep(3 / len(body) * 2)

    async with aiohttp.ClientSession() as http, http.post(
            f"http://{host}:{port}/api/register", data=steady(),
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()


async def test_idle_websocket_outlives_both_timeouts(served: tuple[str, int]) -> None:
    base = "http://{}:{}".format(*served)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/register", json={"username": "idle_socket", "password": PASSWORD}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/login/access-token",
                             data={"username": "idle_socket", "password": PASSWORD}) as resp:
            token = (await resp.json())["access_token"]
        async with http.ws_connect(f"{base}/frontend/ws?token={token}") as ws:
            await asyncio.sleep(2.5)
            await ws.send_str("not json")
            reply = await ws.receive(timeout=10)
            assert reply.type == aiohttp.WSMsgType.TEXT, reply
            assert "error" in orjson.loads(reply.data)


async def test_stalled_body_nobody_reads_is_closed_without_an_error_log(
        served: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        # Refused before the body is read (no credentials); the body then stalls.
        writer.write(b"POST /api/agents/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"name\": ")
        answer = await _read_until_closed(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("head", [
    b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token-" + b"a" * 40_000 + b"\r\n\r\n",
    b"GET /health?q=secret-token-" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: secret-token-1\r\n" % i for i in range(1000)) + b"\r\n",
])
async def test_request_far_over_parser_limits_is_json_that_echoes_nothing(
        served: tuple[str, int], head: bytes, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection(*served)
    try:
        writer.write(head)
        raw = await _read_until_closed(reader)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.split()[1].startswith(b"4"), raw[:200]
    assert b"application/json" in headers.lower()
    assert orjson.loads(body)["detail"]
    assert b"secret-token" not in raw
    assert "secret-token" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
