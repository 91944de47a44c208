"""The OpenAI-compatible endpoint driven by the official `openai` package against the live test server."""
from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.config import Settings
from tests.agents_helpers import RunningAgent
from tests.bus_fixtures import backend_on_router
from tests.chat_fixtures import CONFIG, PROVIDER
from tests.conftest import User
from tests.router_double import RunningRouter
from tests.test_runs import chat_user, start_master

MODEL = f"{PROVIDER}/{CONFIG}"


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, router: RunningRouter) -> TestClient:
    return await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)


async def api_key(client: TestClient, user: User, scopes: list[str] | None = None) -> dict[str, Any]:
    resp = await client.post("/api/keys", json={"name": "sdk", "scopes": scopes or ["chat"]}, headers=user.headers)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def sdk(client: TestClient, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0, timeout=15)


@pytest.fixture
async def setup(client: TestClient, router: RunningRouter, running: list[RunningAgent],
                password_hash: str) -> tuple[RunningAgent, User, dict[str, Any]]:
    master = await start_master(running, client, router)
    user = await chat_user(client, password_hash)
    return master, user, await api_key(client, user)


async def test_models_and_a_completion(client: TestClient, setup: Any) -> None:
    master, user, key = setup
    async with sdk(client, key["key"]) as ai:
        models = await ai.models.list()
        assert [m.id for m in models.data] == [MODEL]
        completion = await ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: hi"
    assert completion.choices[0].finish_reason == "stop" and completion.model == MODEL
    assert len(master.calls) == 1
    # A user JWT works as the bearer too.
    async with sdk(client, user.token) as ai:
        again = await ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "jwt"}])
    assert again.choices[0].message.content == "echo: jwt"


async def test_two_turn_conversation_reaches_the_master_agent(client: TestClient, setup: Any) -> None:
    master, _, key = setup
    async with sdk(client, key["key"]) as ai:
        completion = await ai.chat.completions.create(model=MODEL, messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"}])
    assert completion.choices[0].message.content == "echo: second question"
    [call] = master.calls
    history = [(i["sender_type"], i["content"]) for i in call.chat["items"]]
    assert history[0] == ("user", "second question")
    assert history[2] == ("user", "first question")
    assert history[1][0] == "master_agent" and "first answer" in history[1][1]


async def test_streaming_ends_with_done(client: TestClient, setup: Any) -> None:
    _, _, key = setup
    async with sdk(client, key["key"]) as ai:
        stream = await ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "flow"}],
                                                  stream=True)
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: flow"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_bad_model_and_revoked_key_in_openai_shape(client: TestClient, setup: Any) -> None:
    _, user, key = setup
    async with sdk(client, key["key"]) as ai:
        with pytest.raises(openai.NotFoundError) as missing:
            await ai.chat.completions.create(model="openai/nope", messages=[{"role": "user", "content": "x"}])
        assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
        resp = await client.delete(f"/api/keys/{key['id']}", headers=user.headers)
        assert resp.status == 204
        with pytest.raises(openai.AuthenticationError) as revoked:
            await ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert revoked.value.status_code == 401 and revoked.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await ai.models.list()
    read_only = await api_key(client, user, ["read"])
    async with sdk(client, read_only["key"]) as ai:
        with pytest.raises(openai.PermissionDeniedError):
            await ai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
