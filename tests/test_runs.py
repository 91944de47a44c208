"""Chat runs over HTTP (README "Programmatic chat"): JSON and SSE answers, resumable events, idempotency,
cancel; through the router double and a stub master agent that logs before it answers, on real PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.db import POOL
from genai_backend.jobs.retention import prune_run_events
from genai_backend.runs import RUNS
from tests.agents_helpers import MasterCall, RunningAgent, run_master_agent
from tests.bus_fixtures import backend_on_router
from tests.chat_fixtures import chat_frame, open_socket, receive_reply, setup_llm
from tests.conftest import User, make_user
from tests.router_double import MASTER_SERVER_ML, RunningRouter

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, router: RunningRouter) -> TestClient:
    return await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=5)


async def start_master(running: list[RunningAgent], client: TestClient, router: RunningRouter,
                       gate: asyncio.Event | None = None) -> RunningAgent:
    async def answer(call: MasterCall) -> Any:
        if gate is not None:
            await gate.wait()
        text = call.chat["items"][0]["content"] if call.chat and call.chat.get("items") else call.session_id
        return {"agents_trace": [], "response": f"echo: {text}", "is_success": True}

    master = await run_master_agent(router.url, api_base_url=str(client.make_url("/")), call_back=True,
                                    answer=answer)
    running.append(master)
    await router.double.wait_for_client(MASTER_SERVER_ML)
    return master


async def chat_user(client: TestClient, password_hash: str) -> User:
    user = await make_user(client, password_hash)
    await setup_llm(client, user)
    return user


async def read_events(resp: aiohttp.ClientResponse, stop_after: int | None = None) -> list[dict[str, Any]]:
    """SSE events (id, event, data) until the stream ends or `stop_after` events were read."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    while True:
        line = await asyncio.wait_for(resp.content.readline(), 10)
        if not line:
            return events
        text = line.decode().rstrip("\n")
        if text.startswith(":"):
            continue
        if not text:
            if current:
                events.append(current)
                current = {}
                if stop_after is not None and len(events) >= stop_after:
                    return events
            continue
        name, _, value = text.partition(": ")
        current[name] = int(value) if name == "id" else json.loads(value) if name == "data" else value


async def history(client: TestClient, user: User, session_id: uuid.UUID) -> list[dict[str, Any]]:
    resp = await client.get("/api/chat", params={"session_id": str(session_id)}, headers=user.headers)
    assert resp.status == 200
    return list((await resp.json())["items"])


async def wait_idle(client: TestClient) -> None:
    """Until this process has no run in flight."""
    async with asyncio.timeout(10):
        while client.app[RUNS].tasks:
            await asyncio.sleep(0.02)


def messages_url(session_id: uuid.UUID) -> str:
    return f"/api/chats/{session_id}/messages"


def run_url(session_id: uuid.UUID, request_id: str, tail: str = "") -> str:
    return f"/api/chats/{session_id}/runs/{request_id}{tail}"


@dataclass
class GatedRun:
    gate: asyncio.Event
    master: RunningAgent
    user: User
    session_id: uuid.UUID
    request_id: str
    stream: aiohttp.ClientResponse
    first: dict[str, Any]


async def start_gated_run(client: TestClient, router: RunningRouter, running: list[RunningAgent],
                          password_hash: str, message: str) -> GatedRun:
    """A run sent with SSE whose master agent answers only once `gate` is set; its first event is read."""
    gate = asyncio.Event()
    master = await start_master(running, client, router, gate)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    request_id = str(uuid.uuid4())
    stream = await client.post(messages_url(session_id), headers={**user.headers, **SSE},
                               json={**chat_frame(message), "request_id": request_id})
    [first] = await read_events(stream, stop_after=1)
    return GatedRun(gate, master, user, session_id, request_id, stream, first)


async def test_json_answer_is_the_sockets_answer_and_is_stored(client: TestClient, router: RunningRouter,
                                                               running: list[RunningAgent], password_hash: str) -> None:
    master = await start_master(running, client, router)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    resp = await client.post(messages_url(session_id), json=chat_frame("hello there"), headers=user.headers)
    assert resp.status == 200, await resp.text()
    frame = await resp.json()
    assert frame["type"] == "agent_response"
    answer = frame["response"]
    assert set(answer) == {"execution_time", "response", "request_id", "session_id", "files"}
    assert answer["response"] == {"agents_trace": [], "response": "echo: hello there", "is_success": True}
    assert answer["session_id"] == str(session_id)
    [call] = master.calls
    assert call.request_id == answer["request_id"]
    items = await history(client, user, session_id)
    assert [(i["sender_type"], i["request_id"]) for i in items] == [
        ("master_agent", answer["request_id"]), ("user", answer["request_id"])]
    resp = await client.get(run_url(session_id, answer["request_id"]), headers=user.headers)
    run = await resp.json()
    assert (resp.status, run["state"], run["answer"]) == (200, "completed", frame)
    # Another user sees no run of this id.
    other = await chat_user(client, password_hash)
    resp = await client.get(run_url(session_id, answer["request_id"]), headers=other.headers)
    assert resp.status == 404


async def test_refusals_are_4xx_and_store_nothing(client: TestClient, router: RunningRouter,
                                                  running: list[RunningAgent], password_hash: str, db) -> None:
    master = await start_master(running, client, router)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    resp = await client.post(messages_url(session_id), json=chat_frame("x", llm_name="nope"), headers=user.headers)
    assert (resp.status, await resp.json()) == (400, {"detail": "Config nope does not exist"})
    other = await chat_user(client, password_hash)
    resp = await client.post(messages_url(session_id), json=chat_frame("mine"), headers=user.headers)
    assert resp.status == 200
    resp = await client.post(messages_url(session_id), json=chat_frame("theirs"), headers=other.headers)
    assert (resp.status, await resp.json()) == (403, {"detail": "session_id belongs to another user"})
    assert await db.fetchval("SELECT count(*) FROM runs WHERE session_id = $1", session_id) == 1
    assert len(master.calls) == 1


async def test_sse_events_in_order_and_resume_after_a_dropped_connection(
        client: TestClient, router: RunningRouter, running: list[RunningAgent], password_hash: str) -> None:
    run = await start_gated_run(client, router, running, password_hash, "stream me")
    gate, user, session_id, request_id, resp, first = (run.gate, run.user, run.session_id, run.request_id,
                                                        run.stream, run.first)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert (first["id"], first["event"]) == (1, "run.started")
    resp.close()  # the client drops; the run goes on
    gate.set()
    await wait_idle(client)
    resp = await client.get(run_url(session_id, request_id, "/events"), headers={**user.headers, **SSE})
    everything = await read_events(resp)
    ids = [e["id"] for e in everything]
    assert ids == list(range(1, len(ids) + 1))
    kinds = [e["event"] for e in everything]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert "agent.log" in kinds[1:-1], kinds  # the master agent's log line of this request
    log_event = everything[kinds.index("agent.log")]["data"]
    assert log_event["request_id"] == request_id and log_event["session_id"] == str(session_id)
    assert everything[-1]["data"]["response"]["response"]["response"] == "echo: stream me"
    # Resuming after the first event gets exactly the rest.
    resp = await client.get(run_url(session_id, request_id, "/events"),
                            headers={**user.headers, **SSE, "Last-Event-ID": "1"})
    assert await read_events(resp) == everything[1:]


async def test_live_stream_and_a_run_finishing_with_no_client_is_fetched_later(
        client: TestClient, router: RunningRouter, running: list[RunningAgent], password_hash: str) -> None:
    run = await start_gated_run(client, router, running, password_hash, "live")
    gate, user, session_id, request_id, resp = run.gate, run.user, run.session_id, run.request_id, run.stream
    # A second reader attaches while the run is in flight and follows it live to the end.
    follower = await client.get(run_url(session_id, request_id, "/events"), headers={**user.headers, **SSE})
    resp.close()
    status = await (await client.get(run_url(session_id, request_id), headers=user.headers)).json()
    assert status["state"] == "running" and status["answer"] is None
    gate.set()
    followed = await read_events(follower)
    assert followed[-1]["event"] == "run.completed"
    status = await (await client.get(run_url(session_id, request_id), headers=user.headers)).json()
    assert status["state"] == "completed"
    assert status["answer"]["response"]["response"]["response"] == "echo: live"
    items = await history(client, user, session_id)
    assert [i["sender_type"] for i in items] == ["master_agent", "user"]


async def test_same_request_id_twice_concurrently_and_after_runs_once(
        client: TestClient, router: RunningRouter, running: list[RunningAgent], password_hash: str) -> None:
    gate = asyncio.Event()
    master = await start_master(running, client, router, gate)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    body = {**chat_frame("only once"), "request_id": str(uuid.uuid4())}

    async def send(**headers: str) -> tuple[int, Any]:
        resp = await client.post(messages_url(session_id), json=body, headers={**user.headers, **headers})
        return resp.status, await resp.json()

    first = asyncio.create_task(send())
    second = asyncio.create_task(send())
    async with asyncio.timeout(10):
        while not master.calls:
            await asyncio.sleep(0.02)
    gate.set()
    results = [await first, await second, await send()]
    assert [status for status, _ in results] == [200, 200, 200]
    assert results[0][1] == results[1][1] == results[2][1]
    assert len(master.calls) == 1
    items = await history(client, user, session_id)
    assert [i["sender_type"] for i in items] == ["master_agent", "user"]
    # The same id with another message is a conflict; another user's same id is their own run.
    resp = await client.post(messages_url(session_id), json={**body, "message": "changed"}, headers=user.headers)
    assert resp.status == 409 and "different message" in (await resp.json())["detail"]
    # The Idempotency-Key header works the same way.
    key = {"Idempotency-Key": "retry-me-123"}
    plain = chat_frame("by header")
    answers = []
    for _ in range(2):
        resp = await client.post(messages_url(session_id), json=plain, headers={**user.headers, **key})
        answers.append(await resp.json())
    assert answers[0] == answers[1] and len(master.calls) == 2


async def test_cancel_ends_at_once_and_stops_the_invocation_on_the_process_running_it(
        router: RunningRouter, running: list[RunningAgent], password_hash: str,
        settings: Settings, aiohttp_client: Any) -> None:
    # A master-agent timeout far past the test's waits: only the cancel can end the invocation.
    client = await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=120)
    # The cancel goes to a second instance on the same database; the run is in flight on the first.
    other = await aiohttp_client(create_app(settings))
    run = await start_gated_run(client, router, running, password_hash, "cancel me")
    gate, master, user, session_id, request_id, stream = (run.gate, run.master, run.user, run.session_id,
                                                           run.request_id, run.stream)
    async with asyncio.timeout(10):
        while not master.calls:
            await asyncio.sleep(0.02)
    resp = await other.post(run_url(session_id, request_id, "/cancel"), headers=user.headers)
    assert resp.status == 200
    assert (await resp.json())["state"] == "cancelled"
    rest = await read_events(stream)
    assert rest[-1]["event"] == "run.cancelled"
    # The first instance stops waiting for the master agent, which has not answered.
    await wait_idle(client)
    gate.set()
    status = await (await client.get(run_url(session_id, request_id), headers=user.headers)).json()
    assert status["state"] == "cancelled"
    items = await history(client, user, session_id)
    assert [i["sender_type"] for i in items] == ["master_agent", "user"]
    assert json.loads(items[0]["content"])["response"] == "Run cancelled"
    resp = await client.post(run_url(session_id, request_id, "/cancel"), headers=user.headers)
    assert resp.status == 409


async def test_socket_request_id_is_idempotent(client: TestClient, router: RunningRouter,
                                               running: list[RunningAgent], password_hash: str) -> None:
    master = await start_master(running, client, router)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    request_id = str(uuid.uuid4())
    ws = await open_socket(client, user, session_id)
    await ws.send_json({**chat_frame("via socket"), "request_id": request_id})
    first = await receive_reply(ws)
    await ws.send_json({**chat_frame("via socket"), "request_id": request_id})
    second = await receive_reply(ws)
    assert first == second and first["response"]["request_id"] == request_id
    assert len(master.calls) == 1
    # The HTTP endpoint finds the socket's run too.
    resp = await client.post(messages_url(session_id), json={**chat_frame("via socket"), "request_id": request_id},
                             headers=user.headers)
    assert await resp.json() == first
    await ws.close()


async def test_retention_prunes_events_of_runs_that_ended_long_ago(client: TestClient, password_hash: str,
                                                                   db) -> None:
    user = await make_user(client, password_hash)
    old, recent, live = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for run_id, finished in ((old, "now() - interval '2 days'"), (recent, "now()"), (live, "NULL")):
        await db.execute(f"INSERT INTO runs (id, user_id, session_id, request_id, body_hash, state, finished_at) "
                         f"VALUES ($1, $2, $3, $4, '\\x00', 'completed', {finished})", run_id, uuid.UUID(user.id),
                         uuid.uuid4(), uuid.uuid4())
        await db.execute("INSERT INTO run_events (run_id, seq, event, data) VALUES ($1, 1, 'run.started', '{}')",
                         run_id)
    assert await prune_run_events(client.app[POOL]) == 1
    left = {r["run_id"] for r in await db.fetch("SELECT run_id FROM run_events")}
    assert old not in left and {recent, live} <= left
    assert await db.fetchval("SELECT count(*) FROM runs WHERE id = $1", old) == 1


async def test_run_started_on_one_instance_is_streamed_from_another(
        client: TestClient, router: RunningRouter, running: list[RunningAgent], password_hash: str,
        settings: Settings, aiohttp_client: Any) -> None:
    # A second instance on the same database, without a bus: it sees the run only through PostgreSQL.
    other = await aiohttp_client(create_app(settings))
    run = await start_gated_run(client, router, running, password_hash, "across")
    gate, user, session_id, request_id = run.gate, run.user, run.session_id, run.request_id
    follower = await other.get(run_url(session_id, request_id, "/events"), headers={**user.headers, **SSE})
    assert follower.status == 200
    gate.set()
    followed = await read_events(follower)
    assert [e["id"] for e in followed] == list(range(1, len(followed) + 1))
    assert followed[-1]["event"] == "run.completed"
    assert followed[-1]["data"]["response"]["response"]["response"] == "echo: across"
    status = await (await other.get(run_url(session_id, request_id), headers=user.headers)).json()
    assert status["state"] == "completed"


async def test_abandoned_runs_end_as_failed_and_their_readers_stop(client: TestClient, password_hash: str,
                                                                   db) -> None:
    user = await make_user(client, password_hash)
    run_id, session_id, request_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO runs (id, user_id, session_id, request_id, body_hash, created_at) "
                     "VALUES ($1, $2, $3, $4, '\\x00', now() - interval '1 hour')", run_id, uuid.UUID(user.id),
                     session_id, request_id)
    reader = await client.get(run_url(session_id, str(request_id), "/events"), headers={**user.headers, **SSE})
    assert await prune_run_events(client.app[POOL], abandoned_after=600) == 0
    [event] = await read_events(reader)
    assert event["event"] == "run.failed" and event["data"]["reason"] == "abandoned"
    status = await (await client.get(run_url(session_id, str(request_id)), headers=user.headers)).json()
    assert status["state"] == "failed"


async def test_runs_in_flight_per_user_are_capped_on_every_path(
        aiohttp_client: Any, settings: Settings, router: RunningRouter, running: list[RunningAgent],
        password_hash: str) -> None:
    client = await backend_on_router(aiohttp_client, settings, router, master_agent_timeout=30, max_runs_per_user=3)
    gate = asyncio.Event()
    master = await start_master(running, client, router, gate)
    user = await chat_user(client, password_hash)
    session_id = uuid.uuid4()
    first_id = str(uuid.uuid4())
    first_body = {**chat_frame("run 0"), "request_id": first_id}
    streams = [await client.post(messages_url(session_id), headers={**user.headers, **SSE}, json=first_body)]
    for i in range(1, 3):
        streams.append(await client.post(messages_url(session_id), headers={**user.headers, **SSE},
                                         json=chat_frame(f"run {i}")))
    for stream in streams:
        assert stream.status == 200
        assert (await read_events(stream, stop_after=1))[0]["event"] == "run.started"
    # The fourth run in flight is refused on every path, and nothing of it is stored.
    resp = await client.post(messages_url(session_id), headers=user.headers, json=chat_frame("one too many"))
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "at most 3 per user" in (await resp.json())["detail"]
    resp = await client.post("/v1/chat/completions", headers=user.headers, json={
        "model": f"{chat_frame('')['provider']}/{chat_frame('')['llm_name']}",
        "messages": [{"role": "user", "content": "over the cap"}]})
    assert resp.status == 429 and "Retry-After" in resp.headers
    assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    ws = await open_socket(client, user)
    await ws.send_json(chat_frame("from the socket"))
    reply = await receive_reply(ws)
    assert "Too many runs in progress" in reply["error"] and not ws.closed
    # A resend of a run in flight starts nothing, so it is not refused.
    again = await client.post(messages_url(session_id), headers={**user.headers, **SSE}, json=first_body)
    assert again.status == 200
    # Another user has a cap of their own.
    other = await chat_user(client, password_hash)
    resp = await client.post(messages_url(uuid.uuid4()), headers={**other.headers, **SSE}, json=chat_frame("mine"))
    assert resp.status == 200
    streams += [again, resp]
    async with asyncio.timeout(10):
        while len(master.calls) < 4:
            await asyncio.sleep(0.02)
    # Once the runs have finished, the socket's next message runs.
    gate.set()
    for stream in streams:
        assert (await read_events(stream))[-1]["event"] == "run.completed"
    await ws.send_json(chat_frame("now it fits"))
    assert (await receive_reply(ws, timeout=10))["type"] == "agent_response"
    await ws.close()
    items = await history(client, user, session_id)
    assert "one too many" not in [i["content"] for i in items]
    assert len(master.calls) == 5
