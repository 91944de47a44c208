"""Large list answers: built batch by batch, a few at a time, sent in slices (genai_backend/answers.py).

The data is written straight into the database (a few MiB per agent is quicker that way than
through the endpoints); the answers are read through the real endpoints over a real socket.
"""
from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from genai_backend.answers import ANSWERS
from tests.conftest import User

MIB = 1024 * 1024


async def insert_agents(db: asyncpg.Connection, user: User, count: int, size: int) -> None:
    """`count` agents of the user, each with a description and an input schema of about `size` bytes."""
    await db.execute(
        """INSERT INTO agents (id, alias, name, description, jwt, creator_id, input_parameters, is_active,
                               created_at, updated_at, last_invoked_at)
           SELECT gen_random_uuid(), 'big_' || i || '_' || left($1::uuid::text, 8), 'big ' || i, repeat('d', $3 / 4),
                  'jwt-' || gen_random_uuid(),
                  $1::uuid, json_build_object('type', 'object', 'properties',
                                        json_build_object('p', json_build_object('description', repeat('x', $3 / 2)))),
                  false, now() + i * interval '1 ms', now(), now()
           FROM generate_series(1, $2) AS i""",
        uuid.UUID(user.id), count, size)


async def insert_messages(db: asyncpg.Connection, user: User, session_id: uuid.UUID, count: int, size: int) -> None:
    await db.execute("INSERT INTO chatconversations (session_id, title, creator_id, created_at, updated_at) "
                     "VALUES ($1, 'big', $2, now(), now())", session_id, uuid.UUID(user.id))
    await db.execute(
        """INSERT INTO chatmessages (id, conversation_id, sender_type, content, request_id, created_at)
           SELECT gen_random_uuid(), $1, 'user'::sendertype, repeat('m', $3), NULL, now() + i * interval '1 ms'
           FROM generate_series(1, $2) AS i""",
        session_id, count, size)


async def insert_mcp_servers(db: asyncpg.Connection, user: User, count: int, tools: int, size: int) -> None:
    """Active MCP servers of the user, each with `tools` tools whose input schemas are about `size` bytes."""
    await db.execute(
        """WITH servers AS (
               INSERT INTO mcpservers (id, server_url, creator_id, is_active, created_at, updated_at)
               SELECT gen_random_uuid(), 'http://mcp-' || i || '.example/mcp', $1, true,
                      now() + i * interval '1 ms', now()
               FROM generate_series(1, $2) AS i
               RETURNING id)
           INSERT INTO mcptools (id, name, description, "inputSchema", mcp_server_id, created_at, updated_at)
           SELECT gen_random_uuid(), 'tool_' || t, 'does ' || t,
                  json_build_object('type', 'object', 'description', repeat('s', $4)), servers.id,
                  now() + t * interval '1 ms', now()
           FROM servers, generate_series(1, $3) AS t""",
        uuid.UUID(user.id), count, tools, size)


async def get_bytes(client: TestClient, user: User, path: str) -> tuple[int, bytes, str | None]:
    resp = await client.get(path, headers=user.headers)
    body = await resp.read()
    return resp.status, body, resp.headers.get("Content-Length")


async def test_a_large_answer_is_the_same_bytes_as_a_small_one(client: TestClient, user: User, db: Any) -> None:
    # More rows than the first batch (16) everywhere, so every answer is read in several batches.
    await insert_agents(db, user, 20, MIB)
    session_id = uuid.uuid4()
    await insert_messages(db, user, session_id, 30, 200_000)
    await insert_mcp_servers(db, user, 20, 4, 100_000)
    paths = ["/api/agents/", "/api/agents/?limit=1000", f"/api/chat?session_id={session_id}&per_page=100",
             "/api/chats", "/api/agents/frontend", "/api/mcp/servers"]
    answers = client.app[ANSWERS]
    small = {path: await get_bytes(client, user, path) for path in paths}
    # Every one of them is now "large": built in a lane and sent in slices.
    answers.large = 1000
    large = {path: await get_bytes(client, user, path) for path in paths}
    for path in paths:
        assert large[path][0] == 200, path
        assert large[path][1] == small[path][1], path
        # Still a Content-Length (the front-end ignores bodies without one), and the right one.
        assert large[path][2] == str(len(large[path][1])), path
    agents = orjson.loads(large["/api/agents/"][1])
    assert len(agents) == 20 and all(len(agent["agent_description"]) == MIB // 4 for agent in agents)
    history = orjson.loads(large[f"/api/chat?session_id={session_id}&per_page=100"][1])
    assert history["total_count"] == 30 and len(history["items"]) == 30
    servers = orjson.loads(large["/api/mcp/servers"][1])
    assert len(servers) == 20 and all(len(server["mcp_tools"]) == 4 for server in servers)
    assert answers.in_memory == 0 and answers.waiting == 0


async def test_the_active_catalogue_envelope_counts_its_items_when_large(client: TestClient, user: User,
                                                                         db: Any) -> None:
    await insert_agents(db, user, 5, 400_000)
    await db.execute("UPDATE agents SET is_active = true WHERE creator_id = $1", uuid.UUID(user.id))
    _, small, _ = await get_bytes(client, user, "/api/agents/active?agent_type=all")
    client.app[ANSWERS].large = 1000
    # A change, so the cached answer is not reused.
    await db.execute("UPDATE agents SET updated_at = updated_at WHERE creator_id = $1", uuid.UUID(user.id))
    status, large, _ = await get_bytes(client, user, "/api/agents/active?agent_type=all")
    assert status == 200 and large == small
    assert orjson.loads(large)["count_active_connections"] == 5


def _request_and_stall(port: int, path: str, token: str) -> socket.socket:
    """A client that asks for an answer and then reads none of it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    return sock


async def stall_the_one_lane(client: TestClient, user: User, send_timeout: float) -> socket.socket:
    """One lane, answers over 1 MiB large, and a client holding the lane by reading nothing of the agent list."""
    answers = client.app[ANSWERS]
    answers.large = MIB
    answers.send_timeout = send_timeout
    answers.lanes = 1
    assert client.port is not None
    stalled = await asyncio.to_thread(_request_and_stall, client.port, "/api/agents/", user.token)
    deadline = time.monotonic() + 10
    while answers.in_memory == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert answers.in_memory == 1
    return stalled


async def test_large_answers_wait_for_a_lane_and_a_stalled_reader_is_cut_off(client: TestClient, user: User,
                                                                             db: Any) -> None:
    # 40 MiB: far more than the socket buffers can take, so a reader that reads nothing stalls the send.
    await insert_agents(db, user, 40, MIB)
    answers = client.app[ANSWERS]
    stalled = await stall_the_one_lane(client, user, send_timeout=1.5)
    try:
        # A second large answer waits for the one lane instead of being built beside the first.
        second = asyncio.create_task(get_bytes(client, user, "/api/agents/?limit=1000"))
        while answers.waiting == 0 and not second.done():
            await asyncio.sleep(0.01)
        assert answers.waiting == 1 and answers.in_memory == 1
        # It gets the lane once the stalled reader is cut off (send_timeout), and its whole answer.
        status, body, _ = await asyncio.wait_for(second, 30)
        assert status == 200 and len(orjson.loads(body)) == 40
        # The stalled client was reset, so the kernel dropped the megabytes it still held for it.
        stalled.settimeout(10)
        received, reset = 0, False
        try:
            while chunk := await asyncio.to_thread(stalled.recv, 1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            reset = True
        assert reset and received < 40 * MIB
    finally:
        stalled.close()
    assert answers.in_memory == 0 and answers.waiting == 0


async def test_small_answers_never_wait_for_a_lane(client: TestClient, user: User, db: Any) -> None:
    await insert_agents(db, user, 30, MIB)
    answers = client.app[ANSWERS]
    stalled = await stall_the_one_lane(client, user, send_timeout=30.0)
    try:
        # The one lane is taken (for 30 s), and a small list is answered meanwhile.
        status, body, _ = await asyncio.wait_for(get_bytes(client, user, "/api/chats"), 20)
        assert status == 200 and orjson.loads(body) == {"chats": []}
        assert answers.in_memory == 1
    finally:
        stalled.close()


async def test_lanes_go_in_turns_by_user_and_waiting_is_bounded(client: TestClient, user: User, other_user: User,
                                                                 db: Any) -> None:
    await insert_agents(db, user, 20, MIB)
    await insert_agents(db, other_user, 20, MIB)
    answers = client.app[ANSWERS]
    answers._turns.per_key = 2
    stalled = await stall_the_one_lane(client, user, send_timeout=2.0)
    done: list[str] = []

    async def fetch(who: User, name: str) -> int:
        status, _, _ = await get_bytes(client, who, "/api/agents/")
        done.append(name)
        return status

    async def until_waiting(count: int) -> None:
        async with asyncio.timeout(10):
            while answers.waiting < count:
                await asyncio.sleep(0.01)

    try:
        second = asyncio.create_task(fetch(user, "user 2"))
        await until_waiting(1)
        third = asyncio.create_task(fetch(user, "user 3"))
        await until_waiting(2)
        # The user's share of the waiting places is taken: the next is refused at once.
        resp = await client.get("/api/agents/?limit=999", headers=user.headers)
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["detail"] == "Too many large answers are waiting; try again shortly"
        # Another user still gets in, and is served before the user's own third answer.
        others = asyncio.create_task(fetch(other_user, "other"))
        await until_waiting(3)
        statuses = await asyncio.wait_for(asyncio.gather(second, third, others), 60)
    finally:
        stalled.close()
    assert statuses == [200, 200, 200]
    # FIFO would have served "other" last, behind the user's burst.
    assert done == ["user 2", "other", "user 3"]
    assert answers.in_memory == 0 and answers.waiting == 0
