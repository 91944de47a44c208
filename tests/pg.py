"""One embedded PostgreSQL per test session, and throw-away databases on it."""
from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from genai_backend.embedded_db import EmbeddedPostgres


def dsn_for(base_dsn: str, database: str) -> str:
    """Swap the database name of a `postgresql://user@/db?host=...` DSN."""
    head, _, query = base_dsn.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + database
    return f"{head}?{query}" if query else head


@contextmanager
def embedded_server() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="genai-test-pg-"))
    server = EmbeddedPostgres(root / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop(delete=True)


@contextmanager
def throwaway_database(base_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield dsn_for(base_dsn, name)
    finally:
        with psycopg.connect(base_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
