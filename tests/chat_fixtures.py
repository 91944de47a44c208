"""Helpers for chat tests and the chat benchmark: LLM settings through the real endpoints, socket helpers."""
from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.conftest import User

PROVIDER = "openai"
CONFIG = "gpt4o-default"
API_KEY = "sk-test-plaintext-key"


async def setup_llm(client: TestClient, user: User, provider: str = PROVIDER, config: str = CONFIG,
                    api_key: str | None = API_KEY, metadata: dict[str, Any] | None = None,
                    credentials: dict[str, Any] | None = None) -> None:
    """A provider and a model config for `user`, created with POST #19 and #21."""
    resp = await client.post("/api/llm/model/provider", headers=user.headers,
                             json={"name": provider, "api_key": api_key, "metadata": metadata or {}})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/llm/model/config", headers=user.headers, json={
        "name": config, "model": "gpt-4o-mini", "provider": provider, "system_prompt": "be brief",
        "temperature": 0.2, "max_last_messages": 3, "credentials": credentials or {}})
    assert resp.status == 200, await resp.text()


def chat_frame(message: str, files: list[str] | None = None, provider: str = PROVIDER,
               llm_name: str = CONFIG) -> dict[str, Any]:
    return {"message": message, "provider": provider, "llm_name": llm_name, "files": files or []}


def socket_path(user: User, session_id: uuid.UUID | str | None = None) -> str:
    path = f"/frontend/ws?token={user.token}"
    return path if session_id is None else f"{path}&session_id={session_id}"


async def open_socket(client: TestClient, user: User,
                      session_id: uuid.UUID | str | None = None) -> aiohttp.ClientWebSocketResponse:
    return await client.ws_connect(socket_path(user, session_id), autoclose=False)


async def receive_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
    frame = msg.json()
    assert isinstance(frame, dict), frame
    return frame


async def receive_reply(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5,
                        logs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The next frame that is not an agent log (logs interleave freely, websocket.md §4)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await receive_frame(ws, max(0.01, deadline - time.monotonic()))
        if frame.get("type") != "agent_log":
            return frame
        if logs is not None:
            logs.append(frame)


async def receive_close(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5) -> tuple[int | None, str]:
    msg = await ws.receive(timeout=timeout)
    while msg.type is aiohttp.WSMsgType.TEXT:
        msg = await ws.receive(timeout=timeout)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    return ws.close_code, msg.extra or ""


async def collect(ws: aiohttp.ClientWebSocketResponse, duration: float) -> list[dict[str, Any]]:
    """Every text frame that arrives within `duration` seconds."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        frames.append(msg.json())
    return frames
