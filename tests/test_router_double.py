"""The router double follows agent-bus.md §1–§2, checked with real genai_session clients."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from genai_session.utils.context import GenAIContext
from genai_session.utils.exceptions import RouterInaccessibleException

from tests.agents_helpers import (
    RawClient,
    invoke,
    make_agent_jwt,
    run_agent,
    run_master_agent,
)
from tests.router_double import (
    DEFAULT_BE_KEY,
    MASTER_SERVER_BE,
    MASTER_SERVER_ML,
    RouterDouble,
    RunningRouter,
    serve_router,
)

Frame = dict[str, Any]


@pytest.fixture
async def router() -> AsyncIterator[RunningRouter]:
    async with RunningRouter() as running:
        yield running


@pytest.fixture
async def backend(router: RunningRouter) -> AsyncIterator[RawClient]:
    """A stand-in for the back-end's own router session (client id master_server_be)."""
    async with await RawClient.connect(router.url, {"api-key": DEFAULT_BE_KEY}) as client:
        await router.double.wait_for_client(MASTER_SERVER_BE)
        yield client


def _of_type(message_type: str, agent_uuid: str | None = None) -> Any:
    def match(frame: Frame) -> bool:
        payload = frame.get("request_payload") or {}
        return payload.get("message_type") == message_type and (
            agent_uuid is None or payload.get("agent_uuid") == agent_uuid
        )

    return match


async def test_agent_register_is_forwarded_to_backend(router: RunningRouter, backend: RawClient) -> None:
    agent_id = str(uuid.uuid4())
    token = make_agent_jwt(agent_id)
    agent = await run_agent(router.url, token, "echo_agent", "Echoes text")
    try:
        frame = await backend.receive()
        assert frame == {
            "request_payload": {
                "agent_name": "echo_agent",
                "agent_description": "Echoes text",
                "agent_input_schema": {
                    "type": "function",
                    "function": {
                        "name": agent_id,
                        "description": "Echoes text",
                        "parameters": {
                            "type": "object",
                            "properties": {"text": {"type": "string"}},
                            "required": ["text"],
                        },
                    },
                },
                "agent_uuid": agent_id,
                "agent_jwt": token,
                "message_type": "agent_register",
            }
        }
        assert agent_id in router.double.clients
    finally:
        await agent.stop()


async def test_register_from_master_servers_is_dropped(router: RunningRouter, backend: RawClient) -> None:
    master = await run_master_agent(router.url)
    try:
        await router.double.wait_for_client(MASTER_SERVER_ML)
        await backend.expect_silence()
    finally:
        await master.stop()


async def test_agent_log_is_forwarded_with_sender_id(router: RunningRouter, backend: RawClient) -> None:
    agent_id = str(uuid.uuid4())
    async with await RawClient.connect(
        router.url, {"X-Custom-Authorization": make_agent_jwt(agent_id)}
    ) as agent:
        await agent.send(
            {
                "message_type": "agent_log",
                "agent_uuid": "someone-else",
                "log_message": "hello",
                "log_level": "info",
                "request_id": "r1",
                "session_id": "s1",
            }
        )
        assert await backend.receive() == {
            "request_payload": {
                "message_type": "agent_log",
                "agent_uuid": agent_id,
                "log_message": "hello",
                "log_level": "info",
                "request_id": "r1",
                "session_id": "s1",
            }
        }


async def test_invoke_agent_returns_its_answer(router: RunningRouter, backend: RawClient) -> None:
    agent_id = str(uuid.uuid4())
    agent = await run_agent(router.url, make_agent_jwt(agent_id), "echo_agent", "Echoes text")
    try:
        await router.double.wait_for_client(agent_id)
        request_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
        start = len(router.double.sent)
        result = await invoke(
            router.url, "caller", agent_id, {"text": "hi"}, request_id, session_id, timeout=5
        )
        assert (result.is_success, result.response) == (True, "hi")
        invoker_id = f"caller:{agent_id}"
        assert router.double.frames_to(agent_id)[-1] == {
            "request_payload": {"text": "hi"},
            "request_metadata": {"request_id": request_id, "session_id": session_id},
            "invoked_by": invoker_id,
        }
        # The library logs the invocation on the agent socket, tagged with the request's ids.
        log_frame = await router.double.wait_for_frame(
            MASTER_SERVER_BE, _of_type("agent_log", agent_id), start=start
        )
        assert log_frame["request_payload"]["request_id"] == request_id
        assert log_frame["request_payload"]["session_id"] == session_id
        # The invoker's own disconnect is reported too (its id does not start with the BE key).
        await router.double.wait_for_frame(MASTER_SERVER_BE, _of_type("agent_unregister", invoker_id))
    finally:
        await agent.stop()


async def test_invoke_absent_agent_is_not_active(router: RunningRouter) -> None:
    result = await invoke(router.url, "caller", str(uuid.uuid4()), {"text": "hi"}, timeout=5)
    assert (result.is_success, result.response) == (False, "Agent is NOT active")


async def test_invoke_master_from_backend_key_reaches_master(router: RunningRouter) -> None:
    master = await run_master_agent(router.url)
    try:
        request_id, session_id, user_id = (str(uuid.uuid4()) for _ in range(3))
        payload = {
            "session_id": session_id,
            "user_id": user_id,
            "configs": {"provider": "openai", "api_key": "sk-x"},
            "files": [],
            "timestamp": 1795505751,
        }
        result = await invoke(
            router.url, f"{DEFAULT_BE_KEY}:{request_id}", MASTER_SERVER_ML, payload, request_id, session_id
        )
        assert result.is_success
        assert result.response == {"agents_trace": [], "response": f"echo: {session_id}", "is_success": True}
        [call] = master.calls
        assert (call.request_id, call.session_id, call.kwargs) == (request_id, session_id, payload)
        # Invoker ids starting with the back-end key are not reported on disconnect.
        await asyncio.sleep(0.05)
        unregistered = [
            f["request_payload"]["agent_uuid"]
            for f in router.double.frames_to(MASTER_SERVER_BE, delivered_only=False)
            if f["request_payload"]["message_type"] == "agent_unregister"
        ]
        assert unregistered == []
    finally:
        await master.stop()


async def test_invoke_master_from_other_key_is_rejected(router: RunningRouter) -> None:
    master = await run_master_agent(router.url)
    try:
        async with await RawClient.connect(
            router.url, {"x-custom-invoke-key": f"intruder:{MASTER_SERVER_ML}"}
        ) as intruder:
            await intruder.send(
                {"message_type": "agent_invoke", "agent_uuid": MASTER_SERVER_ML, "request_payload": {"x": 1}}
            )
            assert await intruder.receive() == {
                "error": {"error_message": "Agent is NOT active", "error_type": "AgentNotActive"}
            }
            await intruder.expect_silence()
        # The library ignores frames without message_type, so its send() only times out.
        result = await invoke(router.url, "intruder", MASTER_SERVER_ML, {"x": 1}, timeout=0.3)
        assert (result.is_success, result.response) == (False, "Request timed out")
        assert master.calls == []
    finally:
        await master.stop()


async def test_invoke_without_payload_or_target_falls_through(router: RunningRouter) -> None:
    async with await RawClient.connect(router.url, {"x-custom-invoke-key": "k"}) as client:
        await client.send({"message_type": "agent_invoke"})
        assert await client.receive() == {
            "error": {"error_message": "Missing request payload or agent UUID", "error_type": "NoRequestPayload"}
        }
        assert await client.receive() == {
            "message_type": "agent_error",
            "error": {"error_message": "Agent is NOT active", "error_type": "AgentNotActive"},
        }
        await client.expect_silence()


async def test_invalid_json_and_unknown_type_are_answered(router: RunningRouter) -> None:
    async with await RawClient.connect(router.url, {"x-custom-invoke-key": "k"}) as client:
        await client.send("{not json")
        assert await client.receive() == {
            "error": {"error_message": "Invalid JSON format", "error_type": "InvalidJSONRequestFormat"}
        }
        raw = '{"message_type": "bogus", "agent_uuid": "x"}'
        await client.send(raw)
        assert await client.receive() == {
            "error": {"error_message": f"Unexpected exception: {raw}", "error_type": "AgentGeneralError"}
        }


async def test_backend_error_invoke_makes_agent_exit(router: RunningRouter) -> None:
    agent_id = str(uuid.uuid4())
    agent = await run_agent(router.url, make_agent_jwt(agent_id), "echo_agent", "Echoes text")
    try:
        await router.double.wait_for_client(agent_id)
        error = {"error_message": "Agent ID was not registered before", "error_type": "AgentGeneralError"}
        result = await invoke(router.url, DEFAULT_BE_KEY, agent_id, error, timeout=2)
        # No answer comes, but the invoker id "<BE key>:<agent id>" contains the agent id, so the
        # agent's exit fails the call at once through the router's clean-up broadcast.
        assert (result.is_success, result.response) == (False, "Agent has been unregistered")
        assert router.double.frames_to(agent_id)[-1] == {"error": {**error, "message_type": "agent_error"}}
        await agent.wait_done()
        assert agent.exit_error == "Agent ID was not registered before"
        assert agent.failure is None
        await router.double.wait_gone(agent_id)
    finally:
        await agent.stop()


async def test_error_without_error_type_does_not_stop_agent(router: RunningRouter) -> None:
    agent_id = str(uuid.uuid4())
    agent = await run_agent(router.url, make_agent_jwt(agent_id), "echo_agent", "Echoes text")
    try:
        await router.double.wait_for_client(agent_id)
        result = await invoke(router.url, DEFAULT_BE_KEY, agent_id, {"error_message": "go away"}, timeout=0.2)
        assert result.response == "Request timed out"
        # The library calls None("go away"): a TypeError in a request task, the session lives on.
        assert not agent.done and agent.exit_error is None
        assert [type(e) for e in agent.session.request_errors] == [TypeError]
    finally:
        await agent.stop()


async def test_disconnect_unregisters_and_fails_pending_invocations(
    router: RunningRouter, backend: RawClient
) -> None:
    agent_id = str(uuid.uuid4())
    called, release = asyncio.Event(), asyncio.Event()

    async def slow(agent_context: GenAIContext, text: str) -> str:
        """Answer only when released."""
        called.set()
        await release.wait()
        return text

    # Without logs: the library's fire-and-forget log task would fail on the closed socket after
    # `release` and be reported as "Task exception was never retrieved".
    agent = await run_agent(router.url, make_agent_jwt(agent_id), "slow", "Slow agent", slow, send_logs=False)
    try:
        await router.double.wait_for_client(agent_id)
        pending = asyncio.create_task(invoke(router.url, "caller", agent_id, {"text": "hi"}, timeout=5))
        await asyncio.wait_for(called.wait(), 5)
        await agent.stop()
        result = await pending
        assert (result.is_success, result.response) == (False, "Agent has been unregistered")
        unregister = await router.double.wait_for_frame(MASTER_SERVER_BE, _of_type("agent_unregister", agent_id))
        assert unregister == {"request_payload": {"agent_uuid": agent_id, "message_type": "agent_unregister"}}
        assert router.double.frames_to(f"caller:{agent_id}")[-1] == {
            "message_type": "agent_error",
            "error": {"error_message": "Agent has been unregistered", "agent_uuid": agent_id},
        }
    finally:
        release.set()
        await agent.stop()


async def test_missing_headers_close_4000(router: RunningRouter) -> None:
    for headers in ({}, {"api-key": "not-a-known-key"}):
        async with await RawClient.connect(router.url, headers) as client:
            assert await client.receive_close() == (4000, "Missing Authorization header")
    assert router.double.clients == {}


async def test_same_id_replaces_earlier_connection(router: RunningRouter, backend: RawClient) -> None:
    first = await RawClient.connect(router.url, {"x-custom-invoke-key": "dup"})
    await router.double.wait_for_client("dup")
    async with await RawClient.connect(router.url, {"x-custom-invoke-key": "dup"}) as second:
        await router.double.wait_until(lambda: router.double.connections == 3, 5, "second dup")
        await first.close()
        await asyncio.sleep(0.05)
        assert "dup" in router.double.clients
        await backend.expect_silence(0.05)
        # Invocations reach the newer socket.
        async with await RawClient.connect(router.url, {"x-custom-invoke-key": "caller"}) as caller:
            await caller.send({"message_type": "agent_invoke", "agent_uuid": "dup", "request_payload": {"a": 1}})
            assert await second.receive() == {"request_payload": {"a": 1}, "invoked_by": "caller"}


async def test_stale_close_unregisters_when_asked(aiohttp_server: Any) -> None:
    double, url = await serve_router(aiohttp_server, RouterDouble(stale_close_unregisters=True))
    first = await RawClient.connect(url, {"x-custom-invoke-key": "dup"})
    async with await RawClient.connect(url, {"x-custom-invoke-key": "dup"}):
        await double.wait_until(lambda: double.connections == 2, 5, "second dup")
        await first.close()
        await double.wait_gone("dup")


async def test_router_restart_on_same_port(router: RunningRouter) -> None:
    agent_id = str(uuid.uuid4())
    agent = await run_agent(router.url, make_agent_jwt(agent_id), "echo_agent", "Echoes text")
    try:
        await router.double.wait_for_client(agent_id)
        url = router.url
        await router.stop()
        assert router.double.clients == {}
        # A dead router routes nothing: no agent_unregister for the dropped agent.
        assert not any(
            map(_of_type("agent_unregister"), router.double.frames_to(MASTER_SERVER_BE, delivered_only=False))
        )
        with pytest.raises(OSError):
            await invoke(url, "caller", agent_id, {"text": "hi"})
        # Library quirk (agent-bus.md §7): process_events() does not return when the socket drops.
        await asyncio.sleep(0.1)
        assert not agent.done
        await router.start()
        assert router.url == url
        again = await run_agent(url, make_agent_jwt(agent_id), "echo_agent", "Echoes text")
        try:
            result = await invoke(url, "caller", agent_id, {"text": "back"})
            assert (result.is_success, result.response) == (True, "back")
        finally:
            await again.stop()
    finally:
        await agent.stop()
    # Only stop() reveals what the library's listener died of when the router went away.
    assert isinstance(agent.failure, RouterInaccessibleException)


async def test_master_agent_calls_back_into_rest_api(router: RunningRouter, aiohttp_server: Any) -> None:
    seen: list[tuple[str, dict[str, str], str | None]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.query), request.headers.get("X-API-KEY")))
        if request.path == "/api/chat":
            items = [
                {"sender_type": "master_agent", "content": "old answer"},
                {"sender_type": "user", "content": "newest question"},
            ]
            return web.json_response({"items": items, "total_count": 2})
        return web.json_response({"count_active_connections": 0, "active_connections": []})

    api = web.Application()
    api.router.add_get("/api/chat", record)
    api.router.add_get("/api/agents/active", record)
    server = await aiohttp_server(api)
    master = await run_master_agent(router.url, api_base_url=str(server.make_url("/")), call_back=True)
    try:
        session_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        payload = {
            "session_id": session_id,
            "user_id": user_id,
            "configs": {"max_last_messages": 3},
            "files": [],
            "timestamp": 1,
        }
        result = await invoke(router.url, f"{DEFAULT_BE_KEY}:r", MASTER_SERVER_ML, payload)
        assert result.response == {"agents_trace": [], "response": "echo: newest question", "is_success": True}
        assert seen == [
            ("/api/chat", {"session_id": session_id, "user_id": user_id, "per_page": "3"}, DEFAULT_BE_KEY),
            ("/api/agents/active", {"agent_type": "all", "user_id": user_id}, DEFAULT_BE_KEY),
        ]
        assert master.calls[0].statuses == {"chat": 200, "agents_active": 200}
    finally:
        await master.stop()
