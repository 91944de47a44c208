"""The asyncpg pool (with the embedded server and migrations behind it) and the named SQL queries."""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiosql
import asyncpg
import orjson
from aiohttp import web
from aiosql.adapters.asyncpg import AsyncPGAdapter

from genai_backend.config import SETTINGS, ConfigError
from genai_backend.fairpool import FairPool
from genai_backend.observability import metrics, tracing

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# What a dedicated connection (leadership, fan-out, run listener) sees when the database goes away.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Acquired:
    """A pool's connection for one call, or the connection given."""

    __slots__ = ("client", "conn")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self.client, asyncpg.Pool):
            self.conn = await self.client.acquire()
            return self.conn
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.client.release(self.conn)


class _Adapter(AsyncPGAdapter):
    """aiosql's asyncpg adapter, except for telling a pool from a connection.

    The stock one asks `"acquire" in dir(client)` on every call, which builds and sorts the list
    of every attribute: measured, 6 % of the CPU of a cached GET /api/agents/.
    """

    async def select(self, conn: Any, query_name: str, sql: str, parameters: Any,
                     record_class: Any = None) -> AsyncIterator[Any]:
        assert record_class is None, "record classes are not used here"
        async with _Acquired(conn) as connection:
            rows = await connection.fetch(sql, *self.maybe_order_params(query_name, parameters))
        for row in rows:
            yield row

    async def select_one(self, conn: Any, query_name: str, sql: str, parameters: Any,
                         record_class: Any = None) -> Any:
        assert record_class is None, "record classes are not used here"
        async with _Acquired(conn) as connection:
            return await connection.fetchrow(sql, *self.maybe_order_params(query_name, parameters))

    async def select_value(self, conn: Any, query_name: str, sql: str, parameters: Any) -> Any:
        async with _Acquired(conn) as connection:
            return await connection.fetchval(sql, *self.maybe_order_params(query_name, parameters))

    async def insert_returning(self, conn: Any, query_name: str, sql: str, parameters: Any) -> Any:
        async with _Acquired(conn) as connection:
            row = await connection.fetchrow(sql, *self.maybe_order_params(query_name, parameters))
        if not row:
            return None
        return row[0] if len(row) == 1 else row

    async def insert_update_delete(self, conn: Any, query_name: str, sql: str, parameters: Any) -> Any:
        async with _Acquired(conn) as connection:
            return await connection.execute(sql, *self.maybe_order_params(query_name, parameters))


queries: Any = aiosql.from_path(SQL_DIR, cast(Any, _Adapter))

POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # `json` columns in and out as Python objects; orjson is several times faster than json.
    await conn.set_type_codec("json", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")
    if tracing.enabled():
        conn.add_query_logger(tracing.record_query)


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a released connection needs, in one round trip at most (often none).

    asyncpg's default reset runs a multi-statement query on every release: one more round trip
    per request. Handlers keep no session state (no LISTEN, no SET, no temp tables); jobs take
    their advisory locks on connections of their own and release them in `finally`.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10, metered: bool = False) -> asyncpg.Pool:
    # Timestamps are naive UTC throughout the contract, so the session clock must be UTC.
    # First come, first served (fairpool.py): asyncpg's own pool let some requests wait 25-30 x p50.
    pool_class = metrics.metered_pool_class(FairPool) if metered else FairPool
    # asyncpg.create_pool's own defaults: Pool() takes them all as required keywords.
    pool = await pool_class(dsn, min_size=min_size, max_size=max_size, max_queries=50000,
                            max_inactive_connection_lifetime=300.0, loop=None,
                            connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                            init=_init_connection, reset=_reset_connection, command_timeout=60,
                            server_settings={"timezone": "UTC", "application_name": "genai-backend"})
    assert pool is not None
    return pool


def _describe(dsn: str) -> str:
    """The DSN without its password, for log lines."""
    head, at, tail = dsn.rpartition("@")
    if not at:
        return dsn
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"


def log_embedded(pgdata: Path) -> None:
    log.info("embedded PostgreSQL running; data lives in %s", pgdata)
    log.info("to use your own PostgreSQL instead, set POSTGRES_HOST (+ POSTGRES_USER, POSTGRES_PASSWORD, "
             "POSTGRES_DB, POSTGRES_PORT) or SQLALCHEMY_ASYNC_DATABASE_URI, and SECRET_KEY")


def migrate_or_explain(dsn: str) -> list[str]:
    """Apply pending migrations; a server that cannot be reached is a one-line ConfigError."""
    import psycopg

    from genai_backend.migrations import apply_migrations

    try:
        applied = apply_migrations(dsn)
    except psycopg.OperationalError as exc:
        # libpq's text spans lines ("... failed: Connection refused\n\tIs the server running ...").
        raise ConfigError(f"cannot connect to PostgreSQL at {_describe(dsn)}: {' '.join(str(exc).split())}") from None
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    from genai_backend.embedded_db import EmbeddedPostgres

    embedded: EmbeddedPostgres | None = None
    if settings.embedded_dsn is not None:
        # A worker: the supervisor owns the embedded server and has migrated it.
        dsn = settings.embedded_dsn
    elif settings.database_dsn is None:
        embedded = EmbeddedPostgres(settings.pgdata)
        dsn = await asyncio.to_thread(embedded.start)
        log_embedded(settings.pgdata)
    else:
        dsn = settings.database_dsn
        log.info("using PostgreSQL at %s", _describe(dsn))
    try:
        if settings.apply_migrations and settings.embedded_dsn is None:
            await asyncio.to_thread(migrate_or_explain, dsn)
        try:
            pool = await create_pool(dsn, settings.db_pool_min, settings.db_pool_max, settings.metrics_enabled)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve the database host of {_describe(dsn)}: {exc}") from None
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigError(f"cannot connect to PostgreSQL at {_describe(dsn)}: {exc}") from None
        app[DSN] = dsn
        app[POOL] = pool
        try:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            # Agents are marked inactive by whichever process connects to the router (bus/session.py),
            # not here: another instance may be leading, and its agents are connected.
            yield
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError):
                pool.terminate()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            log.info("embedded PostgreSQL stopped")
