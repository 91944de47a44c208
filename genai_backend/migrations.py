"""Apply and roll back the yoyo migrations in `migrations/` (synchronous: run it in an executor)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations
from yoyo.backends import DatabaseBackend
from yoyo.internalmigrations import mark_schema_version, schema_versions
from yoyo.migrations import MigrationList

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Path = Path(__file__).resolve().parent.parent / "migrations"

# The last revision of the reference's Alembic history; a taken-over database must be at it.
REFERENCE_REVISION = "8403bb364491"

# pg_advisory_lock key ("genai-backend migrations"): held for the whole run on its own connection.
ADVISORY_LOCK_KEY = 0x67656E6169_01
CONNECT_TIMEOUT = 10


def yoyo_uri(dsn: str) -> str:
    """The libpq/asyncpg DSN as a URI for yoyo's psycopg 3 backend.

    yoyo hands query arguments to `psycopg.connect` as keywords, so `?host=/socket/dir` (the
    embedded server, which has no TCP port) and `sslmode=...` pass through untouched. A socket
    directory written percent-encoded in the host position would be lower-cased and left
    encoded by yoyo's parser, so it is moved into the query.
    """
    parts = urlsplit(dsn)
    if parts.scheme.split("+")[0] not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL DSN: {parts.scheme}://...")
    netloc, query = parts.netloc, parts.query
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.lower().startswith("%2f"):
        netloc = userinfo + at
        query = "&".join(q for q in (query, urlencode({"host": unquote(hostport)})) if q)
    return urlunsplit(("postgresql+psycopg", netloc, parts.path, query, parts.fragment))


def _migrations() -> MigrationList:
    return read_migrations(str(MIGRATIONS_DIR))


def _repair_bookkeeping(backend: DatabaseBackend) -> None:
    """Refill yoyo's schema-version row when `DELETE FROM` emptied it (data-model.md §3).

    yoyo asserts that `_yoyo_version` holds a row whenever the table exists; an emptied
    `_yoyo_migration` is fine on its own, as every migration is idempotent and simply runs again.
    """
    if backend.version_table not in backend.list_tables():
        return
    if backend.execute(f"SELECT 1 FROM {backend.version_table_quoted}").fetchone() is None:
        log.info("yoyo's bookkeeping was emptied; re-applying every (idempotent) migration")
        with backend.transaction():
            # The table only exists from yoyo's newest internal schema on (pinned yoyo 9).
            mark_schema_version(backend, max(schema_versions))


def _check_reference_revision(backend: DatabaseBackend) -> None:
    if "alembic_version" not in backend.list_tables():
        return
    row = backend.execute("SELECT version_num FROM alembic_version").fetchone()
    # An empty table is what the black-box tests' cleanup leaves behind: nothing to say.
    if row is not None and row[0] != REFERENCE_REVISION:
        log.warning("database was created by the reference at revision %s, not %s; taking it over may fail",
                    row[0], REFERENCE_REVISION)


@contextmanager
def _exclusive(dsn: str) -> Iterator[None]:
    """One migrating process at a time, through a PostgreSQL advisory lock.

    Not yoyo's lock table: a process killed mid-migration leaves its row behind and every later
    start would wait and then fail. An advisory lock dies with its connection; holding it, any
    row left in yoyo's table is known to be stale and is cleared.
    """
    # A bounded connect: an unreachable host must be a prompt start-up error, not a two-minute hang.
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        conn.execute("DO $$ BEGIN IF to_regclass('yoyo_lock') IS NOT NULL THEN DELETE FROM yoyo_lock; END IF; END $$")
        yield


def apply_migrations(dsn: str) -> list[str]:
    """Apply every pending migration under the migration lock; return the ids applied, in order."""
    migrations = _migrations()
    with _exclusive(dsn), get_backend(yoyo_uri(dsn)) as backend:
        _repair_bookkeeping(backend)
        _check_reference_revision(backend)
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]


class RollbackRefused(Exception):
    """A rollback would drop every table and the caller did not allow that."""


def rollback_migrations(dsn: str, count: int | None = None, *, allow_all: bool = True) -> list[str]:
    """Roll back the last `count` applied migrations (all when None); return their ids, newest first.

    With `allow_all=False` (the CLI, unless the operator wrote `--rollback all --yes`), a rollback
    that would reach the first migration, and so drop every table and all data, is refused
    before anything is touched, whatever the count.
    """
    migrations = _migrations()
    with _exclusive(dsn), get_backend(yoyo_uri(dsn)) as backend:
        _repair_bookkeeping(backend)
        applied = backend.to_rollback(migrations)
        chosen = applied if count is None else applied[:count]
        if chosen and len(chosen) == len(applied) and not allow_all:
            raise RollbackRefused(f"rolling back {len(chosen)} migration(s) would roll back every migration and "
                                  "drop every table")
        backend.rollback_migrations(chosen)
    rolled_back = [m.id for m in chosen]
    if rolled_back:
        log.info("rolled back migrations: %s", ", ".join(rolled_back))
    return rolled_back
