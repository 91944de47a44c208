"""Agent logs: stored with their owner by the bus handler, read back by the owner only (rest-api #17, D04, D05)."""
from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from genai_backend.bus.handlers import dispatch, redact_api_keys
from genai_backend.sockets import SOCKETS
from tests.bus_fixtures import FakeSocket, RecordingBus, register_agent, wait_for
from tests.conftest import User


def log_frame(sender: str, message: Any, session_id: str, request_id: str, level: str = "info") -> str:
    """What the router forwards to master_server_be for an agent_log (agent-bus.md §2)."""
    return json.dumps({"request_payload": {"message_type": "agent_log", "agent_uuid": sender, "log_message": message,
                                           "log_level": level, "request_id": request_id, "session_id": session_id}})


async def test_agent_log_is_stored_for_its_owner_only(client: TestClient, user: User, other_user: User, db) -> None:
    agent = await register_agent(client, user)
    recorder = RecordingBus(client.app)
    session_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    await dispatch(recorder.bus, log_frame(agent["id"], "hello log", session_id, request_id))
    await dispatch(recorder.bus, log_frame(agent["id"], {"a": 1}, session_id, str(uuid.uuid4()), "debug"))
    resp = await client.get("/api/logs/list", params={"request_id": request_id}, headers=user.headers)
    assert resp.status == 200
    [entry] = await resp.json()
    assert set(entry) == {"session_id", "request_id", "log_level", "message", "creator_id", "agent_id", "created_at",
                          "updated_at"}
    assert entry["message"] == "hello log" and entry["creator_id"] == user.id and entry["agent_id"] == agent["id"]
    resp = await client.get("/api/logs/list/", params={"session_id": session_id}, headers=user.headers)
    assert [e["message"] for e in await resp.json()] == ["hello log", '{"a": 1}']
    for params in ({"request_id": request_id}, {"session_id": session_id}):
        resp = await client.get("/api/logs/list", params=params, headers=other_user.headers)
        assert await resp.json() == []


async def test_agent_log_is_pushed_to_owner_sockets_only(client: TestClient, user: User, other_user: User) -> None:
    agent = await register_agent(client, user)
    mine, theirs = FakeSocket(), FakeSocket()
    client.app[SOCKETS].add(uuid.UUID(user.id), mine)  # type: ignore[arg-type]
    client.app[SOCKETS].add(uuid.UUID(other_user.id), theirs)  # type: ignore[arg-type]
    recorder = RecordingBus(client.app)
    await dispatch(recorder.bus, log_frame(agent["id"], "pushed", str(uuid.uuid4()), str(uuid.uuid4())))
    await recorder.settle()

    async def delivered() -> bool:
        return bool(mine.frames)

    # Through the table and NOTIFY, like a push from another process.
    await wait_for(delivered)
    [frame] = mine.frames
    assert frame["type"] == "agent_log" and frame["log"]["message"] == "pushed"
    assert frame["log"]["creator_id"] == user.id and set(frame["log"]) == {
        "session_id", "request_id", "log_level", "message", "creator_id", "agent_id", "created_at", "updated_at"}
    assert theirs.frames == []


async def test_master_agent_log_belongs_to_chat_owner_and_hides_api_keys(client: TestClient, user: User, db) -> None:
    session_id, request_id = uuid.uuid4(), str(uuid.uuid4())
    await db.execute("INSERT INTO chatconversations (session_id, title, creator_id) VALUES ($1, 't', $2)",
                     session_id, uuid.UUID(user.id))
    payload = {"invoked_by": "x", "request_payload": {"configs": {"api_key": "sk-secret", "model": "gpt"}}}
    recorder = RecordingBus(client.app)
    await dispatch(recorder.bus, log_frame("master_server_ml", json.dumps(payload), str(session_id), request_id))
    await dispatch(recorder.bus, log_frame("master_server_ml", str(payload), str(session_id), request_id))
    await dispatch(recorder.bus, log_frame("master_server_ml", "no chat", str(uuid.uuid4()), request_id))
    resp = await client.get("/api/logs/list", params={"request_id": request_id}, headers=user.headers)
    messages = [e["message"] for e in await resp.json()]
    assert len(messages) == 2 and all("sk-secret" not in m and "***" in m for m in messages)
    assert json.loads(messages[0])["request_payload"]["configs"] == {"api_key": "***", "model": "gpt"}
    row = await db.fetchrow("SELECT creator_id, agent_id FROM logs WHERE message = 'no chat'")
    assert row["creator_id"] is None and row["agent_id"] == "master_server_ml"


async def test_agent_log_with_empty_or_bad_ids_is_skipped(client: TestClient, user: User, db) -> None:
    agent = await register_agent(client, user)
    recorder = RecordingBus(client.app)
    good = str(uuid.uuid4())
    for session_id, request_id, level in (("", good, "info"), (good, "", "info"), (good, good, ""),
                                          ("not-a-uuid", good, "info"), (good, good, "x" * 100)):
        await dispatch(recorder.bus, log_frame(agent["id"], "m", session_id, request_id, level))
    await dispatch(recorder.bus, json.dumps({"request_payload": {"message_type": "agent_log"}}))
    await dispatch(recorder.bus, log_frame(agent["id"], "nul \x00 byte", good, good))
    assert await db.fetchval("SELECT count(*) FROM logs") == 1
    assert await db.fetchval("SELECT message FROM logs") == "nul \ufffd byte"


async def test_log_from_unknown_sender_has_no_owner(client: TestClient, user: User, db) -> None:
    recorder = RecordingBus(client.app)
    request_id = str(uuid.uuid4())
    for sender in (str(uuid.uuid4()), "some-invoke-key:master_server_ml"):
        await dispatch(recorder.bus, log_frame(sender, "m", str(uuid.uuid4()), request_id))
    assert await db.fetchval("SELECT count(*) FROM logs WHERE creator_id IS NULL") == 2
    resp = await client.get("/api/logs/list", params={"request_id": request_id}, headers=user.headers)
    assert await resp.json() == []


async def test_list_logs_needs_exactly_one_id(client: TestClient, user: User) -> None:
    resp = await client.get("/api/logs/list", headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": "Either 'request_id' or 'session_id' must be provided"}
    resp = await client.get("/api/logs/list", params={"request_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4())},
                            headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": "Only 'request_id' or 'session_id' could be provided but not both"}
    resp = await client.get("/api/logs/list", params={"request_id": "x"}, headers=user.headers)
    assert resp.status == 422
    resp = await client.get("/api/logs/list", params={"request_id": str(uuid.uuid4())})
    assert resp.status == 401


def test_redact_api_keys_in_both_notations() -> None:
    assert redact_api_keys('{"api_key": "sk-1", "b": 2}') == '{"api_key": "***", "b": 2}'
    assert redact_api_keys("{'api_key': 'sk-1', 'b': 2}") == "{'api_key': '***', 'b': 2}"
    assert redact_api_keys("{'api_key': \"it's\"}") == "{'api_key': \"***\"}"
    assert redact_api_keys(json.dumps(json.dumps({"api_key": "sk-1"}))) == json.dumps(json.dumps({"api_key": "***"}))
    assert redact_api_keys('{"api_key": null, "x": "api_key"}') == '{"api_key": null, "x": "api_key"}'


async def test_master_agent_log_hides_every_model_config_credential(client: TestClient, user: User,
                                                                     other_user: User, db) -> None:
    from tests.test_llm import create_config, create_provider

    await create_provider(client, user)
    credentials = {"aws_secret_access_key": "wJalr/XUtnFEMI\"K7MDENG", "token": "ab", "region": "us-east-1x"}
    await create_config(client, user, credentials=credentials)
    await create_provider(client, other_user)
    await create_config(client, other_user, credentials={"other": "someone-elses-value"})
    session_id, request_id = uuid.uuid4(), str(uuid.uuid4())
    await db.execute("INSERT INTO chatconversations (session_id, title, creator_id) VALUES ($1, 't', $2)",
                     session_id, uuid.UUID(user.id))
    configs = {"api_key": "sk-secret", "model": "gpt", **credentials}
    payload = {"request_payload": {"configs": configs}}
    recorder = RecordingBus(client.app)
    for message in (json.dumps(payload), str(payload), json.dumps(json.dumps(payload)),
                    f"calling with {credentials['aws_secret_access_key']} and someone-elses-value"):
        await dispatch(recorder.bus, log_frame("master_server_ml", message, str(session_id), request_id))
    pushed = FakeSocket()
    client.app[SOCKETS].add(uuid.UUID(user.id), pushed)  # type: ignore[arg-type]
    await dispatch(recorder.bus, log_frame("master_server_ml", str(payload), str(session_id), request_id))
    await recorder.settle()
    resp = await client.get("/api/logs/list", params={"request_id": request_id}, headers=user.headers)
    stored = [e["message"] for e in await resp.json()]
    assert len(stored) == 5 and pushed.frames
    messages = stored + [f["log"]["message"] for f in pushed.frames]
    for message in messages:
        for value in ("sk-secret", "wJalr", "MDENG", "us-east-1x"):
            assert value not in message, message
    assert json.loads(messages[0])["request_payload"]["configs"] == {
        "api_key": "***", "model": "gpt", "aws_secret_access_key": "***", "token": "***", "region": "***"}
    # Only the chat owner's credentials are looked for; free text keeps its other words.
    assert messages[3] == "calling with *** and someone-elses-value"
