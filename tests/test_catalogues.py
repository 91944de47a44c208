"""Cached catalogue answers (genai_backend/catalogues.py): reused while unchanged, never stale.

Every change below is made the way another process would make it (a separate connection, even
inside a transaction that commits after the answer was cached), so only the database-side change
records can tell the cache.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from genai_backend.answers import Answer, Answers, Items
from genai_backend.catalogues import CATALOGUES, Catalogues
from genai_backend.config import SETTINGS
from genai_backend.db import POOL
from genai_backend.jobs.locks import PRUNE_LOCK
from genai_backend.jobs.retention import prune_catalogue_changes
from tests.bus_fixtures import active_agent, insert_a2a_card, insert_mcp_server, register_agent
from tests.conftest import User


def active_url(user: User, agent_type: str = "all") -> str:
    return f"/api/agents/active?agent_type={agent_type}&user_id={user.id}"


async def active(client: TestClient, user: User, agent_type: str = "all") -> dict[str, Any]:
    resp = await client.get(active_url(user, agent_type), headers={"X-API-KEY": client.app[SETTINGS].master_be_api_key})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def names(client: TestClient, user: User) -> list[str]:
    resp = await client.get("/api/agents/", headers=user.headers)
    assert resp.status == 200, await resp.text()
    return [item["agent_name"] for item in await resp.json()]


def cache(client: TestClient) -> Catalogues:
    return client.app[CATALOGUES]


async def test_an_unchanged_catalogue_is_answered_from_the_cache(client: TestClient, user: User, db) -> None:
    await active_agent(client, db, user, name="one")
    first = await active(client, user)
    hits = cache(client).hits
    assert await active(client, user) == first
    assert await active(client, user) == first
    assert cache(client).hits == hits + 2
    await names(client, user)
    await names(client, user)
    assert cache(client).hits == hits + 3


async def test_a_change_from_another_connection_is_seen_at_once(client: TestClient, user: User, db) -> None:
    agent = await active_agent(client, db, user, name="before")
    assert await names(client, user) == ["before"]
    assert [i["name"] for i in (await active(client, user))["active_connections"]] == [agent["alias"]]
    await db.execute("UPDATE agents SET name = 'after', alias = 'after_abcdef' WHERE id = $1", uuid.UUID(agent["id"]))
    assert await names(client, user) == ["after"]
    assert [i["name"] for i in (await active(client, user))["active_connections"]] == ["after_abcdef"]
    await db.execute("UPDATE agents SET is_active = false WHERE id = $1", uuid.UUID(agent["id"]))
    assert (await active(client, user))["active_connections"] == []
    await db.execute("DELETE FROM agents WHERE id = $1", uuid.UUID(agent["id"]))
    assert await names(client, user) == []


async def test_a_transaction_committed_after_the_answer_was_cached_invalidates_it(
        client: TestClient, user: User, db, database_dsn: str) -> None:
    agent = await active_agent(client, db, user, name="before")
    other = await asyncpg.connect(database_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("UPDATE agents SET name = 'after' WHERE id = $1", uuid.UUID(agent["id"]))
        # Cached now, in a snapshot that does not see the open transaction.
        assert await names(client, user) == ["before"]
        assert await names(client, user) == ["before"]
        await tx.commit()
    finally:
        await other.close()
    assert await names(client, user) == ["after"]


async def test_tools_cards_and_flows_invalidate_the_active_catalogue(client: TestClient, user: User, db) -> None:
    one = await active_agent(client, db, user, name="one")
    two = await active_agent(client, db, user, name="two")
    assert (await active(client, user))["count_active_connections"] == 2
    server = await insert_mcp_server(db, user, tools=[{"name": "t1", "inputSchema": {"type": "object"}}])
    assert (await active(client, user, "mcp"))["count_active_connections"] == 1
    # A tool row carries no owner: the trigger finds it through the tool's server.
    await db.execute("INSERT INTO mcptools (id, name, \"inputSchema\", alias, mcp_server_id) "
                     "VALUES ($1, 't2', '{}', 't2_abcdef', $2)", uuid.uuid4(), server["id"])
    assert (await active(client, user, "mcp"))["count_active_connections"] == 2
    await db.execute("DELETE FROM mcptools WHERE name = 't1'")
    assert [i["name"] for i in (await active(client, user, "mcp"))["active_connections"]] == ["t2"]
    await insert_a2a_card(db, user)
    assert (await active(client, user, "a2a"))["count_active_connections"] == 1
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={
        "name": "flow", "description": "d", "flow": [{"id": one["id"], "type": "genai"},
                                                     {"id": two["id"], "type": "genai"}]})
    assert resp.status == 200, await resp.text()
    assert [i["type"] for i in (await active(client, user))["active_connections"]].count("flow") == 1
    # An agent of the flow goes away: the flow leaves the catalogue with it.
    await db.execute("UPDATE agents SET is_active = false WHERE id = $1", uuid.UUID(two["id"]))
    assert [i["type"] for i in (await active(client, user))["active_connections"]].count("flow") == 0


async def test_owners_do_not_share_answers_or_invalidations(client: TestClient, user: User, other_user: User,
                                                            db) -> None:
    await active_agent(client, db, user, name="mine")
    await active_agent(client, db, other_user, name="theirs")
    assert await names(client, user) == ["mine"]
    assert await names(client, other_user) == ["theirs"]
    mine = await active(client, user)
    hits = cache(client).hits
    await register_agent(client, other_user, name="more")
    assert await active(client, user) == mine
    assert cache(client).hits == hits + 1
    assert await names(client, other_user) == ["theirs", "more"]


async def test_truncate_invalidates_every_owner(client: TestClient, user: User, db) -> None:
    await active_agent(client, db, user, name="one")
    assert await names(client, user) == ["one"]
    await db.execute("TRUNCATE agents CASCADE")
    assert await names(client, user) == []


async def test_concurrent_readers_during_writes_end_on_the_last_state(client: TestClient, user: User, db) -> None:
    agent = await active_agent(client, db, user, name="v0")

    async def readers() -> None:
        for _ in range(20):
            await asyncio.gather(*(names(client, user) for _ in range(4)))

    async def writer() -> None:
        for i in range(1, 21):
            await db.execute("UPDATE agents SET name = $2 WHERE id = $1", uuid.UUID(agent["id"]), f"v{i}")
            await asyncio.sleep(0)

    await asyncio.gather(readers(), writer())
    assert await names(client, user) == ["v20"]


async def test_entries_are_bounded_and_old_ones_rebuilt(client: TestClient, user: User, db) -> None:
    small = Catalogues(Answers(), max_entries=2, max_age=0.0)
    pool = client.app[POOL]
    built = []

    async def build(conn: asyncpg.Connection, items: Items) -> Answer:
        built.append(1)
        return items.array()

    for variant in ("a", "b", "c", "c"):
        assert await small.answer(pool, uuid.UUID(user.id), (variant,), build) == b"[]"
    assert len(small._entries) == 2
    # max_age 0: every answer is built again.
    assert len(built) == 4 and small.hits == 0


async def test_pruning_forgets_only_old_change_records(client: TestClient, user: User, db) -> None:
    await register_agent(client, user)
    await db.execute("INSERT INTO catalogue_changes (creator_id, changed_at) "
                     "VALUES ($1, now() AT TIME ZONE 'UTC' - interval '1 day')", uuid.UUID(user.id))
    assert await prune_catalogue_changes(client.app[POOL]) == 1
    assert await db.fetchval("SELECT count(*) FROM catalogue_changes WHERE changed_at < now() - interval '1 hour'") == 0
    assert await db.fetchval("SELECT count(*) FROM catalogue_changes WHERE creator_id = $1", uuid.UUID(user.id)) == 1
    # Another instance pruning: this one skips.
    await db.execute("SELECT pg_advisory_lock($1)", PRUNE_LOCK)
    try:
        assert await prune_catalogue_changes(client.app[POOL]) is None
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK)


async def test_a_clean_up_that_empties_every_table_but_users_leaves_nothing_cached(
        client: TestClient, user: User, db) -> None:
    # What the consumers' black-box tests do between tests (data-model.md §3): the change records
    # are emptied in the same transaction as the rows they describe.
    await active_agent(client, db, user, name="one")
    assert (await active(client, user))["count_active_connections"] == 1
    assert await names(client, user) == ["one"]
    tables = [name for (name,) in await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'users'")]
    assert "catalogue_changes" in tables
    async with db.transaction():
        for table in reversed(sorted(tables, key=lambda t: t != "catalogue_changes")):
            await db.execute(f'DELETE FROM "{table}"')
    assert (await active(client, user))["count_active_connections"] == 0
    assert await names(client, user) == []
