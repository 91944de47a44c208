"""The front-end WebSocket (websocket.md): handshake, the master-agent round trip through a router
double with a real `genai_session` stub master agent, persistence, errors, log frames, concurrency.

Timings are printed (`pytest -s`) as `MEASURE <what> <ms>` lines.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from genai_session.utils.context import GenAIContext

from genai_backend.app import create_app
from genai_backend.auth.tokens import issue_agent_token
from genai_backend.bus.invoke import SPARES
from genai_backend.config import SETTINGS, Settings
from genai_backend.sockets import SOCKETS
from tests.agents_helpers import MasterCall, RunningAgent, invoke, run_agent, run_master_agent
from tests.bus_fixtures import backend_on_router, measure, register_agent
from tests.chat_fixtures import (
    API_KEY,
    CONFIG,
    chat_frame,
    collect,
    open_socket,
    receive_close,
    receive_frame,
    receive_reply,
    setup_llm,
    socket_path,
)
from tests.conftest import User, make_user
from tests.router_double import DEFAULT_BE_KEY, DEFAULT_ML_KEY, MASTER_SERVER_BE, MASTER_SERVER_ML, RunningRouter
from tests.test_files import upload


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, router: RunningRouter) -> TestClient:
    """The back-end on the router double, with its bus running (agent logs reach sockets)."""
    return await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)


async def start_master(running: list[RunningAgent], client: TestClient, router: RunningRouter,
                       **kwargs: Any) -> RunningAgent:
    kwargs.setdefault("call_back", True)
    master = await run_master_agent(router.url, api_base_url=str(client.make_url("/")), **kwargs)
    running.append(master)
    await router.double.wait_for_client(MASTER_SERVER_ML)
    return master


@pytest.fixture
async def master(running: list[RunningAgent], client: TestClient, router: RunningRouter) -> RunningAgent:
    return await start_master(running, client, router)


async def chat_user(client: TestClient, password_hash: str, **llm: Any) -> User:
    user = await make_user(client, password_hash)
    await setup_llm(client, user, **llm)
    return user


async def history(client: TestClient, user: User, session_id: str) -> list[dict[str, Any]]:
    resp = await client.get("/api/chat", params={"session_id": session_id}, headers=user.headers)
    assert resp.status == 200
    return list((await resp.json())["items"])


# --- the round trip ------------------------------------------------------------------------------

async def test_chat_round_trip_answers_and_persists(client: TestClient, master: RunningAgent, password_hash: str,
                                                    db) -> None:
    user = await chat_user(client, password_hash, metadata={"endpoint": "https://e", "model": "meta wins"},
                           credentials={"api_version": "v1", "endpoint": "cred loses"})
    session_id = uuid.uuid4()
    ws = await open_socket(client, user, session_id)
    started = time.perf_counter()
    await ws.send_json(chat_frame("What is the weather like today?"))
    frame = await receive_reply(ws)
    measure("chat round trip (first, with scrypt)", time.perf_counter() - started)
    assert set(frame) == {"type", "response"} and frame["type"] == "agent_response"
    answer = frame["response"]
    assert set(answer) == {"execution_time", "response", "request_id", "session_id", "files"}
    assert answer["response"] == {"agents_trace": [], "response": "echo: What is the weather like today?",
                                  "is_success": True}
    assert isinstance(answer["execution_time"], float) and answer["files"] == []
    assert answer["session_id"] == str(session_id)
    [call] = master.calls
    assert (call.request_id, call.session_id) == (answer["request_id"], str(session_id))
    assert call.statuses == {"chat": 200, "agents_active": 200}
    kwargs = call.kwargs
    assert (kwargs["session_id"], kwargs["user_id"], kwargs["files"]) == (str(session_id), user.id, [])
    assert isinstance(kwargs["timestamp"], int) and abs(kwargs["timestamp"] - time.time()) < 5
    assert list(kwargs["configs"]) == ["provider", "model", "temperature", "system_prompt", "user_prompt",
                                       "config_name", "max_last_messages", "api_version", "endpoint", "api_key"]
    assert kwargs["configs"] == {
        "provider": "openai", "model": "meta wins", "temperature": 0.2, "system_prompt": "be brief",
        "user_prompt": "", "config_name": CONFIG, "max_last_messages": 3, "api_version": "v1",
        "endpoint": "https://e", "api_key": API_KEY}
    items = await history(client, user, str(session_id))
    assert [(i["sender_type"], i["request_id"]) for i in items] == [
        ("master_agent", answer["request_id"]), ("user", answer["request_id"])]
    assert json.loads(items[0]["content"]) == answer["response"]
    assert items[1]["content"] == "What is the weather like today?"
    assert await db.fetchval("SELECT title FROM chatconversations WHERE session_id = $1", session_id) == \
        "What is the weather l"[:20]
    # The second message of the conversation: history is read back by the master agent.
    started = time.perf_counter()
    await ws.send_json(chat_frame("And tomorrow?"))
    second = (await receive_reply(ws))["response"]
    measure("chat round trip (second)", time.perf_counter() - started)
    assert second["response"]["response"] == "echo: And tomorrow?" and second["request_id"] != answer["request_id"]
    assert len(master.calls[1].chat["items"]) == 3
    await ws.close()


async def test_chat_without_session_id_starts_new_conversation(client: TestClient, master: RunningAgent,
                                                               password_hash: str, db) -> None:
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame(""))
    first = (await receive_reply(ws))["response"]
    await ws.send_json(chat_frame("again"))
    second = (await receive_reply(ws))["response"]
    assert first["session_id"] == second["session_id"]
    row = await db.fetchrow("SELECT title, creator_id FROM chatconversations WHERE session_id = $1",
                            uuid.UUID(first["session_id"]))
    assert row["title"] == "New Chat" and str(row["creator_id"]) == user.id
    await ws.close()


async def test_chat_with_files_attaches_and_returns_them(client: TestClient, router: RunningRouter,
                                                         running: list[RunningAgent], password_hash: str) -> None:
    user = await chat_user(client, password_hash)
    other = await chat_user(client, password_hash)
    mine = (await upload(client, user, b"a,b", "data.csv", "text/csv"))["id"]
    theirs = (await upload(client, other, b"secret", "secret.txt"))["id"]
    produced: list[str] = []

    async def answer_with_a_file(call: MasterCall) -> dict[str, Any]:
        # An agent's upload during the request, tagged with the request's ids (as genai_session's FileManager does).
        agent = await register_agent(client, user)
        agent_user = User({"id": user.id, "username": "agent"}, agent["jwt"])
        extra = [("request_id", None, call.request_id.encode(), None),
                 ("session_id", None, call.session_id.encode(), None)]
        produced.append((await upload(client, agent_user, b"chart", "chart.png", "image/png", extra=extra))["id"])
        return {"agents_trace": [{"name": "x"}], "response": "done", "is_success": True}

    master = await start_master(running, client, router, answer=answer_with_a_file)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("look", files=[mine, theirs, "not-a-uuid", str(uuid.uuid4())]))
    answer = (await receive_reply(ws))["response"]
    sent_files = master.calls[0].kwargs["files"]
    assert [f["id"] for f in sent_files] == [mine]
    assert sent_files[0] == {"id": mine, "session_id": answer["session_id"], "request_id": answer["request_id"],
                             "original_name": "data.csv", "mimetype": "text/csv", "internal_id": mine,
                             "internal_name": f"{mine}.csv", "from_agent": False, "creator_id": user.id}
    assert [f["id"] for f in answer["files"]] == [mine, produced[0]]
    assert answer["files"][1]["from_agent"] is True
    meta = await (await client.get(f"/files/{theirs}/metadata", headers=other.headers)).json()
    assert meta["session_id"] is None and meta["request_id"] is None
    resp = await client.get("/files", params={"session_id": answer["session_id"]}, headers=user.headers)
    assert {f["file_id"] for f in await resp.json()} == {mine, produced[0]}
    # A row whose content vanished from disk is not offered as a result file.
    (client.app[SETTINGS].files_dir / f"{mine}.csv").unlink()
    await ws.send_json(chat_frame("again", files=[mine]))
    # (the agent produced another file meanwhile)
    assert [f["id"] for f in (await receive_reply(ws))["response"]["files"]] == [produced[1]]
    await ws.close()


async def test_chat_with_ollama_provider_sends_null_key(client: TestClient, master: RunningAgent,
                                                        password_hash: str) -> None:
    user = await chat_user(client, password_hash, provider="ollama", api_key=None,
                           metadata={"base_url": "http://ollama:11434"})
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi", provider="ollama"))
    assert (await receive_reply(ws))["response"]["response"]["is_success"] is True
    configs = master.calls[0].kwargs["configs"]
    assert configs["api_key"] is None and configs["base_url"] == "http://ollama:11434"
    await ws.close()


async def test_chat_uses_current_provider_key_and_config(client: TestClient, master: RunningAgent,
                                                         password_hash: str) -> None:
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("one"))
    await receive_reply(ws)
    # Edited while the socket is open: the next message must see the new values, not a cached copy.
    resp = await client.patch("/api/llm/model/providers/openai", json={"api_key": "sk-second"}, headers=user.headers)
    assert resp.status == 200
    configs = await (await client.get("/api/llm/model/configs", headers=user.headers)).json()
    config_id = configs[0]["configs"][0]["id"]
    resp = await client.patch(f"/api/llm/model/config/{config_id}", json={"temperature": 0.9}, headers=user.headers)
    assert resp.status == 200
    await ws.send_json(chat_frame("two"))
    await receive_reply(ws)
    first, second = (call.kwargs["configs"] for call in master.calls)
    assert (first["api_key"], first["temperature"]) == (API_KEY, 0.2)
    assert (second["api_key"], second["temperature"]) == ("sk-second", 0.9)
    await ws.close()


async def test_chat_after_master_agent_and_router_restart(client: TestClient, router: RunningRouter,
                                                          running: list[RunningAgent], password_hash: str) -> None:
    user = await chat_user(client, password_hash)
    master = await start_master(running, client, router)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("before"))
    assert (await receive_reply(ws))["response"]["response"]["response"] == "echo: before"

    def spares() -> list[str]:
        return [c for c in router.double.clients
                if c.startswith(DEFAULT_BE_KEY + ":") and c.endswith(":" + MASTER_SERVER_ML)]

    await router.double.wait_until(lambda: len(spares()) == SPARES, what="spare invoker connections")
    # Spare connections got the router's clean-up notice while idle: they are dropped, and none
    # may leak into a new call.
    await master.stop()
    await router.double.wait_gone(MASTER_SERVER_ML)
    await router.double.wait_until(lambda: not spares(), what="stale spares closed")
    master = await start_master(running, client, router)
    await ws.send_json(chat_frame("after"))
    assert (await receive_reply(ws))["response"]["response"]["response"] == "echo: after"
    await router.restart()
    await router.double.wait_for_client(MASTER_SERVER_BE, timeout=10)
    await master.stop()
    master = await start_master(running, client, router)
    await ws.send_json(chat_frame("restarted"))
    assert (await receive_reply(ws))["response"]["response"]["response"] == "echo: restarted"
    await ws.close()


# --- failures of the master agent, answered like answers (D09, D32) -------------------------------

async def assert_error_answer(client: TestClient, user: User, ws: aiohttp.ClientWebSocketResponse,
                              text: str) -> None:
    answer = (await receive_reply(ws, timeout=10))["response"]
    assert answer["response"] == {"agents_trace": [], "response": text, "is_success": False}
    assert answer["execution_time"] == 0 and answer["files"] == []
    items = await history(client, user, answer["session_id"])
    assert json.loads(items[0]["content"]) == answer["response"] and items[1]["sender_type"] == "user"


async def test_chat_without_master_agent_answers_error(client: TestClient, password_hash: str) -> None:
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("anyone?"))
    await assert_error_answer(client, user, ws, "Agent is NOT active")
    await ws.close()


async def test_chat_master_agent_failure_answers_error(client: TestClient, router: RunningRouter,
                                                       running: list[RunningAgent], password_hash: str) -> None:
    async def fail(call: MasterCall) -> Any:
        raise RuntimeError("LLM quota exceeded")

    await start_master(running, client, router, answer=fail, call_back=False)
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi"))
    await assert_error_answer(client, user, ws, "LLM quota exceeded")
    await ws.close()


async def test_chat_master_agent_timeout_answers_error(settings: Settings, router: RunningRouter, aiohttp_client: Any,
                                                       running: list[RunningAgent], password_hash: str) -> None:
    app = create_app(replace(settings, router_ws_url=router.url, master_agent_timeout=0.3))
    client = await aiohttp_client(app)

    async def hang(call: MasterCall) -> Any:
        await asyncio.sleep(3)
        return "too late"

    await start_master(running, client, router, answer=hang, call_back=False)
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    started = time.perf_counter()
    await ws.send_json(chat_frame("hi"))
    await assert_error_answer(client, user, ws, "Request timed out")
    assert time.perf_counter() - started < 2
    await ws.close()


async def test_chat_router_unreachable_closes_1011(settings: Settings, aiohttp_client: Any,
                                                   password_hash: str) -> None:
    client = await aiohttp_client(create_app(settings))  # conftest's router URL: a closed port
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi"))
    assert await receive_frame(ws) == {"error": "Cannot connect to router service. Try again later"}
    assert (await receive_close(ws))[0] == 1011


async def test_chat_answer_is_stored_after_client_left(client: TestClient, router: RunningRouter,
                                                       running: list[RunningAgent], password_hash: str, db) -> None:
    async def slow(call: MasterCall) -> Any:
        await asyncio.sleep(0.3)
        return {"agents_trace": [], "response": "late", "is_success": True}

    await start_master(running, client, router, answer=slow, call_back=False)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    ws = await open_socket(client, user, session_id)
    await ws.send_json(chat_frame("bye"))
    await asyncio.sleep(0.1)
    await ws.close()
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM chatmessages WHERE conversation_id = $1", session_id) == 2:
            break
        await asyncio.sleep(0.02)
    items = await history(client, user, str(session_id))
    assert json.loads(items[0]["content"])["response"] == "late"
    assert client.app[SOCKETS].count() == 0


# --- bad frames and configuration errors (D07, D08) ----------------------------------------------

async def test_bad_frames_get_error_and_socket_keeps_working(client: TestClient, master: RunningAgent,
                                                             password_hash: str, db) -> None:
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    bad = {"not json": "{nope", "array": json.dumps([1]),
           "missing message": json.dumps({"provider": "openai", "llm_name": CONFIG}),
           "wrong types": json.dumps({"message": 5, "provider": None, "llm_name": CONFIG, "files": "x"}),
           "wrong file type": json.dumps(chat_frame("x") | {"files": [1]}),
           "nul": json.dumps(chat_frame("a\x00b"))}
    for text in bad.values():
        await ws.send_str(text)
        frame = await receive_frame(ws)
        assert set(frame) == {"error"} and frame["error"].startswith("Message validation failed. Details: ")
    await ws.send_bytes(b"binary")
    assert (await receive_frame(ws))["error"].startswith("Message validation failed")
    frames = {}
    await ws.send_str(bad["wrong types"])
    frames["types"] = (await receive_frame(ws))["error"]
    assert "message: Input should be a valid string" in frames["types"]
    assert "files: Input should be a valid list" in frames["types"]
    assert await db.fetchval("SELECT count(*) FROM chatmessages") == 0 and master.calls == []
    await ws.send_json(chat_frame("valid at last") | {"extra": "ignored"})
    assert (await receive_reply(ws))["response"]["response"]["response"] == "echo: valid at last"
    assert len(master.calls) == 1
    await ws.close()


@pytest.mark.parametrize("field, value, text", [
    ("llm_name", "no-such-config", "Config no-such-config does not exist"),
    ("provider", "anthropic", "Provider anthropic does not exist"),
])
async def test_unknown_provider_or_config_closes_1003_before_writing(
        client: TestClient, master: RunningAgent, password_hash: str, db, field: str, value: str, text: str) -> None:
    user = await chat_user(client, password_hash)
    other = await chat_user(client, password_hash, config="only-theirs")
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi") | {field: value})
    assert await receive_frame(ws) == {"error": text}
    assert await receive_close(ws) == (1003, text)
    assert await db.fetchval("SELECT count(*) FROM chatconversations") == 0
    assert master.calls == [] and other


async def test_other_users_config_is_unknown(client: TestClient, master: RunningAgent, password_hash: str) -> None:
    await chat_user(client, password_hash, config="only-theirs")
    user = await chat_user(client, password_hash)
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi", llm_name="only-theirs"))
    assert await receive_frame(ws) == {"error": "Config only-theirs does not exist"}
    assert (await receive_close(ws))[0] == 1003


async def test_undecryptable_key_closes_normally(client: TestClient, master: RunningAgent, password_hash: str,
                                                 db) -> None:
    user = await chat_user(client, password_hash)
    await db.execute("UPDATE modelproviders SET api_key = 'AAAA*AAAA*AAAAAAAAAAA=*AAAAAAAAAAAAAAAAAAAAAA=='")
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("hi"))
    assert (await receive_frame(ws))["error"].startswith("Could not decrypt api_key.")
    assert (await receive_close(ws))[0] == 1000
    assert await db.fetchval("SELECT count(*) FROM chatmessages") == 0


# --- handshake (websocket.md §1, D28) ------------------------------------------------------------

async def test_handshake_refusals_are_403(client: TestClient, password_hash: str, db) -> None:
    user = await chat_user(client, password_hash)
    other = await chat_user(client, password_hash)
    theirs = uuid.uuid4()
    await db.execute("INSERT INTO chatconversations (session_id, title, creator_id) VALUES ($1, 't', $2)",
                     theirs, uuid.UUID(other.id))
    agent_token = issue_agent_token(uuid.uuid4(), uuid.UUID(user.id), client.app[SETTINGS].secret_key)
    gone = await make_user(client, password_hash)
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(gone.id))
    paths = ["/frontend/ws", "/frontend/ws?token=", "/frontend/ws?token=garbage",
             f"/frontend/ws?token={user.token[:-3]}abc", f"/frontend/ws?token={agent_token}",
             socket_path(gone), socket_path(user, "not-a-uuid"), socket_path(user, theirs)]
    for path in paths:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(path)
        assert refused.value.status == 403, path
    resp = await client.get(socket_path(user, theirs))
    assert resp.status == 403 and await resp.json() == {"detail": "session_id belongs to another user"}
    # The owner gets in, with any accepted spelling of the id.
    for spelling in (str(theirs), theirs.hex.upper(), f"{{{theirs}}}"):
        ws = await open_socket(client, other, spelling)
        assert not ws.closed
        await ws.close()


async def test_sockets_are_registered_per_user_and_closed_on_shutdown(settings: Settings, aiohttp_client: Any,
                                                                      password_hash: str) -> None:
    client = await aiohttp_client(create_app(settings))
    user = await make_user(client, password_hash)
    other = await make_user(client, password_hash)
    sockets = [await open_socket(client, user), await open_socket(client, user), await open_socket(client, other)]
    registry = client.app[SOCKETS]
    assert (registry.count(uuid.UUID(user.id)), registry.count(uuid.UUID(other.id))) == (2, 1)
    await sockets[0].close()
    await asyncio.sleep(0.05)
    assert registry.count(uuid.UUID(user.id)) == 1
    await client.server.close()
    for ws in sockets[1:]:
        assert (await receive_close(ws))[0] == 1001


# --- agent logs reach their owner's sockets only (websocket.md §4, D05) --------------------------

async def test_agent_log_during_chat_reaches_owner_sockets_only(client: TestClient, router: RunningRouter,
                                                                running: list[RunningAgent],
                                                                password_hash: str) -> None:
    user = await chat_user(client, password_hash)
    other = await chat_user(client, password_hash)
    agent_row = await register_agent(client, user, "logger", "logs while working")

    async def logging_agent(agent_context: GenAIContext, text: str) -> str:
        agent_context.logger.info(f"working on {text}")
        await asyncio.sleep(0.05)
        return text.upper()

    agent = await run_agent(router.url, agent_row["jwt"], "logger", "logs", handler=logging_agent)
    running.append(agent)

    async def call_the_agent(call: MasterCall) -> dict[str, Any]:
        # What the real master agent does: invoke the user's agent with the chat's ids.
        result = await invoke(router.url, DEFAULT_ML_KEY, agent_row["id"], {"text": "task"},
                              call.request_id, call.session_id)
        return {"agents_trace": [{"name": "logger", "output": result.response}], "response": "ok",
                "is_success": True}

    await start_master(running, client, router, answer=call_the_agent, call_back=False)
    chatting, watching = await open_socket(client, user), await open_socket(client, user)
    stranger = await open_socket(client, other)
    await chatting.send_json(chat_frame("go"))
    logs: list[dict[str, Any]] = []
    answer = (await receive_reply(chatting, timeout=10, logs=logs))["response"]
    assert answer["response"]["agents_trace"] == [{"name": "logger", "output": "TASK"}]
    logs += [f for f in await collect(chatting, 0.5)]
    watched = await collect(watching, 0.3)
    assert any(f["log"]["message"] == "working on task" for f in logs)
    agent_logs = [f for f in watched if f["log"]["agent_id"] == agent_row["id"]]
    assert "working on task" in [f["log"]["message"] for f in agent_logs]
    for frame in logs + watched:
        assert frame["type"] == "agent_log" and frame["log"]["creator_id"] == user.id
        assert frame["log"]["request_id"] == answer["request_id"]
        assert API_KEY not in json.dumps(frame)
    assert await collect(stranger, 0.2) == []
    for ws in (chatting, watching, stranger):
        await ws.close()


# --- many chats at once (D06) --------------------------------------------------------------------

async def test_32_concurrent_chats_get_their_own_answers(client: TestClient, master: RunningAgent,
                                                         password_hash: str, db) -> None:
    users = [await chat_user(client, password_hash) for _ in range(32)]
    sessions = [uuid.uuid4() for _ in users]
    sockets = [await open_socket(client, u, s) for u, s in zip(users, sessions)]
    texts = [f"message {i} {uuid.uuid4().hex}" for i in range(len(users))]

    async def chat(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
        await ws.send_json(chat_frame(text))
        return dict((await receive_reply(ws, timeout=20))["response"])

    started = time.perf_counter()
    answers = await asyncio.gather(*(chat(ws, text) for ws, text in zip(sockets, texts)))
    measure("32 concurrent chat round trips", time.perf_counter() - started)
    crossed = [i for i, (a, t, s) in enumerate(zip(answers, texts, sessions))
               if a["response"]["response"] != f"echo: {t}" or a["session_id"] != str(s)]
    assert crossed == []
    assert len({a["request_id"] for a in answers}) == 32 and len(master.calls) == 32
    for user, session_id, text, answer in zip(users, sessions, texts, answers):
        rows = await db.fetch("SELECT m.sender_type::text AS sender, m.content, m.request_id FROM chatmessages m "
                              "JOIN chatconversations c ON c.session_id = m.conversation_id "
                              "WHERE c.session_id = $1 AND c.creator_id = $2 ORDER BY m.created_at",
                              session_id, uuid.UUID(user.id))
        assert [(r["sender"], str(r["request_id"])) for r in rows] == [
            ("user", answer["request_id"]), ("master_agent", answer["request_id"])]
        assert rows[0]["content"] == text and json.loads(rows[1]["content"])["response"] == f"echo: {text}"
    for ws in sockets:
        await ws.close()
