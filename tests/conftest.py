"""Shared fixtures: one embedded PostgreSQL per session, a migrated database, an app per test."""
from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import psycopg
import pytest
from aiohttp.test_utils import TestClient

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.embedded_db import EmbeddedPostgres
from genai_backend.migrations import apply_migrations
from tests.pg import embedded_server, throwaway_database

if TYPE_CHECKING:
    from tests.agents_helpers import RunningAgent

# Tables kept between tests: yoyo's bookkeeping (the schema must survive truncation).
_KEEP = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with embedded_server() as server:
        yield server


@pytest.fixture(scope="session")
def database_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    from genai_backend.migrations import apply_migrations

    with throwaway_database(pg_server.dsn) as dsn:
        apply_migrations(dsn)
        yield dsn


@pytest.fixture(scope="session")
def _truncate_sql(database_dsn: str) -> str:
    with psycopg.connect(database_dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").fetchall()
    tables = [f'"{name}"' for (name,) in rows if name not in _KEEP]
    return f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"


@pytest.fixture(autouse=True)
def _clean_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """Truncate after every test that touched the database.

    Autouse, so it is set up first and torn down last: after aiohttp_client has closed the apps.
    Truncating while an app still holds a transaction would block (and a rollback per test would
    hide bugs, since the app uses several connections at once).
    """
    # Both looked up now: pytest no longer lets a teardown ask for a fixture the test did not use.
    touched = "database_dsn" in request.fixturenames
    dsn = request.getfixturevalue("database_dsn") if touched else ""
    truncate = request.getfixturevalue("_truncate_sql") if touched else ""
    yield
    if touched:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(truncate)


@pytest.fixture
def settings(database_dsn: str, tmp_path: Path, _truncate_sql: str) -> Settings:
    return Settings(
        secret_key=secrets.token_hex(32),
        database_dsn=database_dsn,
        data_dir=tmp_path / "data",
        files_dir=tmp_path / "files",
        apply_migrations=False,
        start_router=False,
        start_jobs=False,
        router_ws_url="ws://127.0.0.1:1/ws",
        db_pool_min=1,
        db_pool_max=5,
        router_backoff_initial=0.05,
        router_backoff_max=0.5,
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def router() -> AsyncIterator[Any]:
    """The router double on a real socket (tests/router_double.py)."""
    from tests.router_double import RunningRouter

    async with RunningRouter() as running:
        yield running


@pytest.fixture
async def running() -> AsyncIterator[list[RunningAgent]]:
    """Agents and master agents a test starts (tests/agents_helpers.py); stopped afterwards whatever happened."""
    started: list[RunningAgent] = []
    yield started
    for agent in started:
        await agent.stop()


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for asserting what is (not) in the database."""
    conn = await asyncpg.connect(database_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


# --- data factories that go through the real endpoints ---------------------------------------

PASSWORD = "Str0ng!pass"


async def register_user(client: TestClient, username: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
    username = username or f"user_{uuid.uuid4().hex[:8]}"
    resp = await client.post("/api/register", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    resp = await client.post("/api/login/access-token", data={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    token: str = (await resp.json())["access_token"]
    return token


class User:
    def __init__(self, info: dict[str, Any], token: str) -> None:
        self.id = info["id"]
        self.username = info["username"]
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def password_hash() -> str:
    import bcrypt

    # Hashed once: bcrypt costs ~250 ms, and most tests only need a user to exist.
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


async def make_user(client: TestClient, password_hash: str, username: str | None = None) -> User:
    """A user created with the production SQL and a token issued like a login would."""
    from genai_backend.auth.tokens import issue_user_token
    from genai_backend.config import SETTINGS
    from genai_backend.db import POOL, queries

    pool = client.app[POOL]
    user_id = uuid.uuid4()
    async with pool.acquire() as conn:
        row = await queries.create_user(conn, user_id=user_id, username=username or f"user_{user_id.hex[:8]}",
                                        password=password_hash)
        await queries.create_profile(conn, profile_id=uuid.uuid4(), user_id=user_id)
    info = {"id": str(row["id"]), "username": row["username"]}
    return User(info, issue_user_token(user_id, client.app[SETTINGS].secret_key))


@pytest.fixture
async def user(client: TestClient, password_hash: str) -> User:
    return await make_user(client, password_hash)


@pytest.fixture
async def other_user(client: TestClient, password_hash: str) -> User:
    return await make_user(client, password_hash)


@pytest.fixture
async def own_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A migrated server of the test's own, for tests that stop and start it under the service."""
    root = Path(tempfile.mkdtemp(prefix="genai-own-pg-"))
    server = EmbeddedPostgres(root / "pgdata")
    dsn = await asyncio.to_thread(server.start)
    await asyncio.to_thread(apply_migrations, dsn)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop, True)
        shutil.rmtree(root, ignore_errors=True)
