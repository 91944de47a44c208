"""The yoyo migrations: stairway, idempotency, takeover of a reference database, resulting schema."""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from yoyo import get_backend, read_migrations
from yoyo.connections import parse_uri

from genai_backend.embedded_db import EmbeddedPostgres
from genai_backend.migrations import MIGRATIONS_DIR, apply_migrations, rollback_migrations, yoyo_uri
from tests.pg import embedded_server, throwaway_database

ALL = ["0001_initial", "0002_contract_changes", "0003_views", "0004_catalogue_changes",
       "0005_limits_and_usernames", "0006_pushes", "0007_tool_credentials_and_cards", "0008_api_keys",
       "0009_runs", "0010_running_runs"]
YOYO_TABLES = {"_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock"}
# Our own bookkeeping, not part of data-model.md.
SERVICE_TABLES = {"catalogue_changes", "pushes", "api_keys", "username_keys", "socket_slots", "login_attempts",
                  "runs", "run_events"}


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    with embedded_server() as srv:
        yield srv


@pytest.fixture
def dsn(server: EmbeddedPostgres) -> Iterator[str]:
    with throwaway_database(server.dsn) as db_dsn:
        yield db_dsn


# --- helpers ---------------------------------------------------------------------------------

def _run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _fetch(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _public_tables(dsn: str) -> list[str]:
    # Catalogue order, like the black-box tests' inspector (not alphabetical, not dependency order).
    return [name for (name,) in _fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def _app_tables(dsn: str) -> set[str]:
    return set(_public_tables(dsn)) - YOYO_TABLES - {"alembic_version"}


def _is_optional_id_index(name: str, definition: str) -> bool:
    # Plain indexes on `id` duplicate the primary key; the reference may have more of them.
    return name != "ix_users_id" and re.fullmatch(r"ix_\w+_id", name) is not None \
        and "UNIQUE" not in definition and definition.endswith("(id)")


def _schema(dsn: str) -> dict[str, Any]:
    """Everything about the application's schema that migrations decide, comparable with ==."""
    skip = tuple(YOYO_TABLES | {"alembic_version"})
    columns = _fetch(dsn, """
        SELECT table_name, column_name, udt_name, is_nullable, column_default, character_maximum_length
        FROM information_schema.columns
        WHERE table_schema = 'public' AND NOT table_name = ANY(%s)
        ORDER BY 1, 2""", (list(skip),))
    constraints = _fetch(dsn, """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' AND NOT rel.relname = ANY(%s)
        ORDER BY 1, 2""", (list(skip),))
    indexes = [row for row in _fetch(dsn, """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND NOT tablename = ANY(%s) ORDER BY 1, 2""", (list(skip),))
               if not _is_optional_id_index(row[1], row[2])]
    enums = _fetch(dsn, """
        SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY 1 ORDER BY 1""")
    triggers = _fetch(dsn, """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace
        WHERE ns.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1, 2""")
    return {"columns": columns, "constraints": constraints, "indexes": indexes, "enums": enums,
            "triggers": triggers}


def _applied_ids(dsn: str) -> set[str]:
    return {mid for (mid,) in _fetch(dsn, "SELECT migration_id FROM _yoyo_migration")}


# --- the schema data-model.md describes, transcribed independently of the migration files ------

TS = "timestamp"
VC = "varchar"
# table -> column -> (udt_name, nullable)
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "users": {"id": ("uuid", False), "username": (VC, False), "password": (VC, False),
              "created_at": (TS, False), "updated_at": (TS, False)},
    "userprofiles": {"id": ("uuid", False), "first_name": (VC, True), "last_name": (VC, True),
                     "user_id": ("uuid", True)},
    "agents": {"id": ("uuid", False), "alias": (VC, False), "name": (VC, False), "description": (VC, False),
               "jwt": (VC, False), "creator_id": ("uuid", True), "input_parameters": ("json", False),
               "created_at": (TS, False), "updated_at": (TS, False), "last_invoked_at": (TS, False),
               "is_active": ("bool", False)},
    "agentworkflows": {"id": ("uuid", False), "alias": (VC, False), "name": (VC, False),
                       "description": (VC, False), "flow": ("json", False), "creator_id": ("uuid", True),
                       "is_active": ("bool", False), "created_at": (TS, False), "updated_at": (TS, False)},
    "logs": {"id": ("int4", False), "session_id": ("uuid", False), "request_id": ("uuid", False),
             "agent_id": (VC, True), "creator_id": ("uuid", True), "created_at": (TS, False),
             "updated_at": (TS, False), "message": (VC, False), "log_level": (VC, False)},
    "files": {"id": ("uuid", False), "session_id": ("uuid", True), "request_id": ("uuid", True),
              "creator_id": ("uuid", True), "mimetype": (VC, False), "original_name": (VC, False),
              "internal_name": (VC, False), "internal_id": ("uuid", False), "from_agent": ("bool", False),
              "created_at": (TS, False)},
    "modelproviders": {"id": ("uuid", False), "name": (VC, False), "api_key": (VC, True),
                       "provider_metadata": ("json", False), "creator_id": ("uuid", True),
                       "created_at": (TS, False), "updated_at": (TS, False), "secret_key_id": (VC, True)},
    "modelconfigs": {"id": ("uuid", False), "name": (VC, False), "model": (VC, False),
                     "provider_id": ("uuid", True), "system_prompt": (VC, False), "user_prompt": (VC, True),
                     "max_last_messages": ("int4", False), "temperature": ("float8", False),
                     "credentials": ("json", False), "creator_id": ("uuid", True),
                     "created_at": (TS, False), "updated_at": (TS, False)},
    "chatconversations": {"session_id": ("uuid", False), "title": (VC, False), "creator_id": ("uuid", True),
                          "created_at": (TS, False), "updated_at": (TS, False)},
    "chatmessages": {"id": ("uuid", False), "request_id": ("uuid", True), "sender_type": ("sendertype", False),
                     "content": (VC, False), "extra_metadata": ("json", True), "created_at": (TS, False),
                     "updated_at": (TS, False), "conversation_id": ("uuid", True)},
    "mcpservers": {"id": ("uuid", False), "name": (VC, True), "description": (VC, True),
                   "server_url": (VC, False), "creator_id": ("uuid", True), "is_active": ("bool", False),
                   "created_at": (TS, False), "updated_at": (TS, False), "headers": (VC, True),
                   "header_names": ("json", True), "unavailable_reason": (VC, True), "secret_key_id": (VC, True)},
    "mcptools": {"id": ("uuid", False), "name": (VC, False), "description": (VC, True),
                 "inputSchema": ("json", False), "annotations": ("json", True), "alias": (VC, True),
                 "mcp_server_id": ("uuid", True), "created_at": (TS, False), "updated_at": (TS, False)},
    "a2acards": {"id": ("uuid", False), "name": (VC, True), "alias": (VC, True), "description": (VC, True),
                 "server_url": (VC, False), "card_content": ("json", False), "is_active": ("bool", False),
                 "created_at": (TS, False), "updated_at": (TS, False), "creator_id": ("uuid", True),
                 "endpoint_url": (VC, True), "protocol_version": (VC, True), "transport": (VC, True)},
    "projects": {"id": ("uuid", False), "name": (VC, False)},
    "user_project_associations": {"id": ("int4", False), "user_id": ("uuid", False),
                                  "project_id": ("uuid", False)},
    "teams": {"id": ("uuid", False), "name": (VC, False)},
    "user_team_associations": {"id": ("int4", False), "user_id": ("uuid", False), "team_id": ("uuid", False)},
    # The spec leaves these two tables' foreign keys' nullability open: nullable, like the unused
    # tables' other optional columns.
    "agent_project_associations": {"id": ("int4", False), "agent_id": ("uuid", True),
                                   "project_id": ("uuid", True)},
    "agentflow_project_associations": {"id": ("int4", False), "flow_id": ("uuid", True),
                                       "project_id": ("uuid", True)},
}
SERIAL_TABLES = {"logs", "user_project_associations", "user_team_associations", "agent_project_associations",
                 "agentflow_project_associations"}

# (table, column) -> referenced (table, column); every one ON DELETE CASCADE.
EXPECTED_FKS = {
    ("userprofiles", "user_id"): ("users", "id"),
    ("agents", "creator_id"): ("users", "id"),
    ("agentworkflows", "creator_id"): ("users", "id"),
    ("logs", "creator_id"): ("users", "id"),
    ("files", "creator_id"): ("users", "id"),
    ("modelproviders", "creator_id"): ("users", "id"),
    ("modelconfigs", "creator_id"): ("users", "id"),
    ("modelconfigs", "provider_id"): ("modelproviders", "id"),
    ("chatconversations", "creator_id"): ("users", "id"),
    ("chatmessages", "conversation_id"): ("chatconversations", "session_id"),
    ("mcpservers", "creator_id"): ("users", "id"),
    ("mcptools", "mcp_server_id"): ("mcpservers", "id"),
    ("a2acards", "creator_id"): ("users", "id"),
    ("user_project_associations", "user_id"): ("users", "id"),
    ("user_project_associations", "project_id"): ("projects", "id"),
    ("user_team_associations", "user_id"): ("users", "id"),
    ("user_team_associations", "team_id"): ("teams", "id"),
    ("agent_project_associations", "agent_id"): ("agents", "id"),
    ("agent_project_associations", "project_id"): ("projects", "id"),
    ("agentflow_project_associations", "flow_id"): ("agentworkflows", "id"),
    ("agentflow_project_associations", "project_id"): ("projects", "id"),
}

# name -> (table, columns)
EXPECTED_UNIQUE_CONSTRAINTS = {
    "agents_alias_key": ("agents", ["alias"]),
    "agents_jwt_key": ("agents", ["jwt"]),
    "agentworkflows_alias_key": ("agentworkflows", ["alias"]),
    "uq_user_item_name": ("modelproviders", ["creator_id", "name"]),
    "uq_modelconfigs_creator_name": ("modelconfigs", ["creator_id", "name"]),
    "uq_mcp_server_url": ("mcpservers", ["creator_id", "server_url"]),
    "uq_a2a_card_server_url": ("a2acards", ["creator_id", "server_url"]),
    "teams_name_key": ("teams", ["name"]),
    # Migration 0005: one NFKC key per account.
}

# name -> (table, column, unique)
EXPECTED_INDEXES = {
    "ix_users_id": ("users", "id", False),
    "ix_users_username": ("users", "username", True),
    "ix_userprofiles_user_id": ("userprofiles", "user_id", False),
    "ix_agents_creator_id": ("agents", "creator_id", False),
    "ix_agentworkflows_creator_id": ("agentworkflows", "creator_id", False),
    "ix_logs_session_id": ("logs", "session_id", False),
    "ix_logs_request_id": ("logs", "request_id", False),
    "ix_logs_agent_id": ("logs", "agent_id", False),
    "ix_logs_creator_id": ("logs", "creator_id", False),
    "ix_logs_created_at": ("logs", "created_at", False),
    "ix_files_session_id": ("files", "session_id", False),
    "ix_files_request_id": ("files", "request_id", False),
    "ix_files_creator_id": ("files", "creator_id", False),
    "ix_files_internal_id": ("files", "internal_id", False),
    "ix_modelproviders_creator_id": ("modelproviders", "creator_id", False),
    "ix_modelconfigs_model": ("modelconfigs", "model", False),
    "ix_modelconfigs_provider_id": ("modelconfigs", "provider_id", False),
    "ix_modelconfigs_creator_id": ("modelconfigs", "creator_id", False),
    "ix_chatconversations_creator_id": ("chatconversations", "creator_id", False),
    "ix_chatmessages_conversation_id": ("chatmessages", "conversation_id", False),
    "ix_mcpservers_creator_id": ("mcpservers", "creator_id", False),
    "ix_mcptools_mcp_server_id": ("mcptools", "mcp_server_id", False),
    "ix_a2acards_creator_id": ("a2acards", "creator_id", False),
    "ix_user_project_associations_user_id": ("user_project_associations", "user_id", False),
    "ix_user_project_associations_project_id": ("user_project_associations", "project_id", False),
    "ix_user_team_associations_user_id": ("user_team_associations", "user_id", False),
    "ix_user_team_associations_team_id": ("user_team_associations", "team_id", False),
}


def _assert_contract_schema(dsn: str) -> None:
    """The schema is the one data-model.md describes, with the contract's two changes."""
    assert _app_tables(dsn) - SERVICE_TABLES == set(EXPECTED_COLUMNS)

    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    defaults: dict[tuple[str, str], str | None] = {}
    for table, column, udt, nullable, default, length in _fetch(dsn, """
            SELECT table_name, column_name, udt_name, is_nullable, column_default, character_maximum_length
            FROM information_schema.columns WHERE table_schema = 'public'"""):
        if table in EXPECTED_COLUMNS:
            columns.setdefault(table, {})[column] = (udt, nullable == "YES")
            defaults[(table, column)] = default
            assert length is None, f"{table}.{column} has a length limit"
    assert columns == EXPECTED_COLUMNS
    for (table, column), default in defaults.items():
        if column in {"created_at", "updated_at", "last_invoked_at"}:
            assert default == "now()", (table, column, default)
        elif column == "id" and table in SERIAL_TABLES:
            assert default == f"nextval('{table}_id_seq'::regclass)", (table, column, default)
        elif column == "id":
            assert default == "gen_random_uuid()", (table, column, default)
        else:
            assert default is None, (table, column, default)

    assert _fetch(dsn, "SELECT enum_range(NULL::sendertype)::text") == [("{user,master_agent}",)]

    fks = {}
    for table, column, ref_table, ref_column, on_delete in _fetch(dsn, """
            SELECT rel.relname, att.attname, ref.relname, refatt.attname, con.confdeltype
            FROM pg_constraint con
            JOIN pg_class rel ON rel.oid = con.conrelid
            JOIN pg_class ref ON ref.oid = con.confrelid
            JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = con.conkey[1]
            JOIN pg_attribute refatt ON refatt.attrelid = con.confrelid AND refatt.attnum = con.confkey[1]
            WHERE con.contype = 'f' AND rel.relnamespace = 'public'::regnamespace"""):
        assert on_delete == "c", f"{table}.{column} is not ON DELETE CASCADE"
        fks[(table, column)] = (ref_table, ref_column)
    assert {k: v for k, v in fks.items() if k[0] not in SERVICE_TABLES} == EXPECTED_FKS

    uniques = {name: (table, list(cols)) for name, table, cols in _fetch(dsn, """
        SELECT con.conname, rel.relname,
               array(SELECT att.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, pos)
                     JOIN pg_attribute att ON att.attrelid = con.conrelid AND att.attnum = k.num
                     ORDER BY k.pos)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        WHERE con.contype = 'u' AND rel.relnamespace = 'public'::regnamespace""")}
    assert {k: v for k, v in uniques.items() if v[0] not in SERVICE_TABLES} == EXPECTED_UNIQUE_CONSTRAINTS

    indexes = {name: (table, definition) for table, name, definition in _fetch(dsn, """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'""")}
    for name, (table, column, unique) in EXPECTED_INDEXES.items():
        assert name in indexes, f"index {name} is missing"
        assert indexes[name][0] == table
        assert indexes[name][1].endswith(f"USING btree ({column})"), indexes[name]
        assert ("CREATE UNIQUE INDEX" in indexes[name][1]) is unique, indexes[name]
    assert "modelconfigs_name_key" not in indexes


def _assert_config_names_unique_per_user(dsn: str) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    config = ("INSERT INTO modelconfigs (id, name, model, provider_id, system_prompt, max_last_messages, "
              "temperature, credentials, creator_id) VALUES (%s, 'shared', 'gpt-4o', NULL, 'sys', 5, 0.7, '{}', %s)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for user in (alice, bob):
            conn.execute("INSERT INTO users (id, username, password) VALUES (%s, %s, 'x')", (user, f"u{user.hex}"))
        conn.execute(config, (uuid.uuid4(), alice))
        conn.execute(config, (uuid.uuid4(), bob))  # another user may reuse the name
        with pytest.raises(psycopg.errors.UniqueViolation, match="uq_modelconfigs_creator_name"):
            conn.execute(config, (uuid.uuid4(), alice))
        conn.execute("DELETE FROM users WHERE id = ANY(%s)", ([alice, bob],))


# --- yoyo URI --------------------------------------------------------------------------------

@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://u:p%40ss@db.example:5433/app?sslmode=require",
     ("u", "p@ss", "db.example", 5433, "app", {"sslmode": "require"})),
    ("postgres://postgres:postgres@0.0.0.0:5432/postgres",
     ("postgres", "postgres", "0.0.0.0", 5432, "postgres", {})),
    ("postgresql://postgres:@/postgres?host=/tmp/x y/pgdata",
     ("postgres", "", None, None, "postgres", {"host": "/tmp/x y/pgdata"})),
    ("postgresql://postgres@%2Ftmp%2FPG%20dir/app",
     ("postgres", None, None, None, "app", {"host": "/tmp/PG dir"})),
    ("postgresql://u:p@[::1]:5433/app", ("u", "p", "::1", 5433, "app", {})),
])
def test_yoyo_uri_keeps_every_connection_parameter(dsn: str, expected: tuple[Any, ...]) -> None:
    uri = yoyo_uri(dsn)
    parsed = parse_uri(uri)
    assert parsed.scheme == "postgresql+psycopg"
    assert (parsed.username, parsed.password, parsed.hostname, parsed.port, parsed.database, parsed.args) == expected


def test_yoyo_uri_rejects_other_databases() -> None:
    with pytest.raises(ValueError):
        yoyo_uri("mysql://u:p@host/db")


def test_apply_migrations_reaches_socket_only_server(server: EmbeddedPostgres, dsn: str) -> None:
    # The embedded server listens on no TCP port: only the socket directory in `?host=` reaches it.
    assert _fetch(server.dsn, "SELECT current_setting('listen_addresses')") == [("",)]
    socket_dir = parse_uri(yoyo_uri(dsn)).args["host"]
    database = dsn.partition("?")[0].rsplit("/", 1)[1]
    # The same server, written with the socket directory percent-encoded in the host position.
    encoded = f"postgresql://postgres@{quote(socket_dir, safe='')}/{database}"
    assert apply_migrations(encoded) == ALL
    assert _applied_ids(dsn) == set(ALL)


# --- stairway, idempotency, locking ------------------------------------------------------------

def test_migrations_stairway(dsn: str) -> None:
    migrations = read_migrations(str(MIGRATIONS_DIR))
    assert [m.id for m in migrations] == ALL
    with get_backend(yoyo_uri(dsn)) as backend:
        before = _schema(dsn)
        for migration in migrations:
            backend.apply_one(migration)
            applied = _schema(dsn)
            assert applied != before, f"{migration.id} changed nothing"
            backend.rollback_one(migration)
            assert _schema(dsn) == before, f"rolling back {migration.id} left changes behind"
            backend.apply_one(migration)
            assert _schema(dsn) == applied, f"re-applying {migration.id} gave another schema"
            before = applied
    assert _applied_ids(dsn) == set(ALL)
    _assert_contract_schema(dsn)


def test_rollback_migrations_removes_everything(dsn: str) -> None:
    apply_migrations(dsn)
    assert rollback_migrations(dsn, 1) == ["0010_running_runs"]
    assert rollback_migrations(dsn, 1) == ["0009_runs"]
    assert "runs" not in _public_tables(dsn) and "run_events" not in _public_tables(dsn)
    assert rollback_migrations(dsn, 1) == ["0008_api_keys"]
    assert "api_keys" not in _public_tables(dsn)
    assert rollback_migrations(dsn, 1) == ["0007_tool_credentials_and_cards"]
    assert "secret_key_id" not in {c for (c,) in _fetch(
        dsn, "SELECT column_name FROM information_schema.columns WHERE table_name = 'mcpservers'")}
    assert rollback_migrations(dsn, 1) == ["0006_pushes"]
    assert "pushes" not in _public_tables(dsn)
    assert rollback_migrations(dsn, 1) == ["0005_limits_and_usernames"]
    assert not {"username_keys", "socket_slots", "login_attempts"} & set(_public_tables(dsn))
    assert _fetch(dsn, "SELECT proname FROM pg_proc WHERE proname IN ('take_socket_slot', 'note_username_key')") == []
    assert rollback_migrations(dsn, 1) == ["0004_catalogue_changes"]
    assert _fetch(dsn, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal") == []
    assert "catalogue_changes" not in _public_tables(dsn)
    assert rollback_migrations(dsn, 1) == ["0003_views"]
    assert _fetch(dsn, "SELECT viewname FROM pg_views WHERE schemaname = 'public'") == []
    assert rollback_migrations(dsn, 1) == ["0002_contract_changes"]
    assert "modelconfigs_name_key" in {name for (name,) in _fetch(dsn, "SELECT conname FROM pg_constraint")}
    assert rollback_migrations(dsn) == ["0001_initial"]
    assert rollback_migrations(dsn) == []
    assert set(_public_tables(dsn)) == YOYO_TABLES
    assert _fetch(dsn, "SELECT typname FROM pg_type WHERE typname = 'sendertype'") == []
    assert apply_migrations(dsn) == ALL


def test_apply_migrations_twice_is_noop(dsn: str) -> None:
    assert apply_migrations(dsn) == ALL
    schema = _schema(dsn)
    assert apply_migrations(dsn) == []
    assert _schema(dsn) == schema
    _assert_contract_schema(dsn)


def _insert_sample_rows(dsn: str) -> uuid.UUID:
    user = uuid.uuid4()
    conversation = uuid.uuid4()
    server = uuid.uuid4()
    provider = uuid.uuid4()
    project = uuid.uuid4()
    statements: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT INTO users (id, username, password) VALUES (%s, 'alice', '$2b$12$hash')", (user,)),
        ("INSERT INTO userprofiles (id, first_name, last_name, user_id) VALUES (%s, 'A', NULL, %s)",
         (uuid.uuid4(), user)),
        ("INSERT INTO agents (id, alias, name, description, jwt, creator_id, input_parameters, is_active) "
         "VALUES (%s, 'alias_1', 'agent', '', 'jwt-1', %s, '{\"type\": \"function\"}', true)", (uuid.uuid4(), user)),
        ("INSERT INTO agentworkflows (id, alias, name, description, flow, creator_id, is_active) "
         "VALUES (%s, 'flow_1', 'flow', 'd', '[{\"id\": \"x\", \"type\": \"genai\"}]', %s, false)",
         (uuid.uuid4(), user)),
        ("INSERT INTO logs (session_id, request_id, agent_id, creator_id, message, log_level) "
         "VALUES (%s, %s, 'agent-1', %s, 'hello', 'info')", (uuid.uuid4(), uuid.uuid4(), user)),
        ("INSERT INTO files (id, session_id, request_id, creator_id, mimetype, original_name, internal_name, "
         "internal_id, from_agent) VALUES (%s, NULL, NULL, %s, 'text/plain', 'a.txt', 'x.txt', %s, false)",
         (file_id := uuid.uuid4(), user, file_id)),
        ("INSERT INTO modelproviders (id, name, api_key, provider_metadata, creator_id) "
         "VALUES (%s, 'openai', 'enc', '{}', %s)", (provider, user)),
        ("INSERT INTO modelconfigs (id, name, model, provider_id, system_prompt, user_prompt, max_last_messages, "
         "temperature, credentials, creator_id) VALUES (%s, 'cfg', 'gpt-4o', %s, 'sys', NULL, 5, 0.7, "
         "'{\"k\": \"v\"}', %s)", (uuid.uuid4(), provider, user)),
        ("INSERT INTO chatconversations (session_id, title, creator_id) VALUES (%s, 'hi', %s)",
         (conversation, user)),
        ("INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id) "
         "VALUES (%s, %s, 'user', 'hello there', %s)", (uuid.uuid4(), uuid.uuid4(), conversation)),
        ("INSERT INTO mcpservers (id, server_url, creator_id, is_active) VALUES (%s, 'http://mcp:8000/mcp', %s, true)",
         (server, user)),
        ("INSERT INTO mcptools (id, name, description, \"inputSchema\", annotations, alias, mcp_server_id) "
         "VALUES (%s, 'add', NULL, '{\"type\": \"object\"}', NULL, 'add_abcdef', %s)", (uuid.uuid4(), server)),
        ("INSERT INTO a2acards (id, name, alias, description, server_url, card_content, is_active, creator_id) "
         "VALUES (%s, 'card', 'card_abcdef', NULL, 'http://a2a:9000', '{\"skills\": []}', true, %s)",
         (uuid.uuid4(), user)),
        ("INSERT INTO projects (id, name) VALUES (%s, 'Default')", (project,)),
        ("INSERT INTO user_project_associations (user_id, project_id) VALUES (%s, %s)", (user, project)),
    ]
    with psycopg.connect(dsn) as conn:
        for sql, params in statements:
            conn.execute(sql, params)
    return user


# Columns later migrations add (all null on rows they did not write).
_ADDED = {"files": ["created_at"], "modelproviders": ["secret_key_id"],
          "mcpservers": ["headers", "header_names", "unavailable_reason", "secret_key_id"],
          "a2acards": ["endpoint_url", "protocol_version", "transport"]}


def _rows(dsn: str, tables: set[str]) -> dict[str, list[str]]:
    """Every row of every table as JSON; without the columns added since the reference."""
    with psycopg.connect(dsn) as conn:
        return {table: sorted(text for (text,) in conn.execute(
                    f"SELECT (to_jsonb(t) - %s::text[])::text FROM \"{table}\" t", (_ADDED.get(table, []),)))
                for table in tables}


USED_TABLES = {"users", "userprofiles", "agents", "agentworkflows", "logs", "files", "modelproviders",
               "modelconfigs", "chatconversations", "chatmessages", "mcpservers", "mcptools", "a2acards",
               "projects", "user_project_associations"}


def test_apply_migrations_after_bookkeeping_emptied_keeps_rows(dsn: str) -> None:
    apply_migrations(dsn)
    _insert_sample_rows(dsn)
    rows, schema = _rows(dsn, USED_TABLES), _schema(dsn)
    assert all(rows[table] for table in USED_TABLES)

    _run(dsn, *(f'DELETE FROM "{table}"' for table in YOYO_TABLES))
    assert apply_migrations(dsn) == ALL
    assert _rows(dsn, USED_TABLES) == rows
    assert _schema(dsn) == schema
    assert apply_migrations(dsn) == []


def test_apply_migrations_after_every_table_emptied(dsn: str) -> None:
    apply_migrations(dsn)
    _insert_sample_rows(dsn)
    schema = _schema(dsn)
    # What the black-box tests do once per session: DELETE FROM every public table, catalogue order.
    with psycopg.connect(dsn) as conn:
        for table in _public_tables(dsn):
            conn.execute(f'DELETE FROM "{table}"')
    assert apply_migrations(dsn) == ALL
    assert _schema(dsn) == schema
    _assert_contract_schema(dsn)


def test_apply_migrations_clears_lock_left_by_killed_process(dsn: str) -> None:
    apply_migrations(dsn)
    rollback_migrations(dsn, 2)
    # What yoyo leaves behind when the migrating process is killed mid-way.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    started = time.monotonic()
    assert apply_migrations(dsn) == ALL[-2:]
    assert time.monotonic() - started < 5


def test_apply_migrations_concurrently_applies_each_once(dsn: str) -> None:
    # yoyo's own tables exist already, so nothing but the lock serialises the two runs.
    apply_migrations(dsn)
    rollback_migrations(dsn)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        try:
            results.append(apply_migrations(dsn))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], ALL]
    _assert_contract_schema(dsn)


# --- the resulting schema ---------------------------------------------------------------------

def test_schema_matches_data_model(dsn: str) -> None:
    apply_migrations(dsn)
    _assert_contract_schema(dsn)
    _assert_config_names_unique_per_user(dsn)


def _insert_other_user_with_agent(dsn: str) -> uuid.UUID:
    other = uuid.uuid4()
    _run(dsn, f"INSERT INTO users (username, password, id) VALUES ('bob', 'x', '{other}')",
         "INSERT INTO agents (alias, name, description, jwt, creator_id, input_parameters, is_active) "
         f"VALUES ('alias_2', 'b', '', 'jwt-2', '{other}', '{{}}', false)")
    return other


def test_deleting_user_cascades_to_owned_rows(dsn: str) -> None:
    apply_migrations(dsn)
    user = _insert_sample_rows(dsn)
    other = _insert_other_user_with_agent(dsn)
    _run(dsn, f"DELETE FROM users WHERE id = '{user}'")
    for table in USED_TABLES - {"projects", "users"}:
        count = _fetch(dsn, f'SELECT count(*) FROM "{table}"')[0][0]
        expected = 1 if table == "agents" else 0
        assert count == expected, f"{table} kept {count} rows of a deleted user"
    assert _fetch(dsn, "SELECT creator_id FROM agents") == [(other,)]
    assert _fetch(dsn, """SELECT column_name FROM information_schema.columns
                          WHERE table_name = 'mcptools' AND column_name = 'inputSchema'""") == [("inputSchema",)]


# --- taking over a database created by the reference -------------------------------------------

# What the reference's Alembic revisions 046a06a0b0a4 + 8403bb364491 leave behind, written from
# data-model.md the way Alembic emits it: unnamed inline UNIQUEs (PostgreSQL names them
# <table>_<column>_key), SERIAL ids, no uuid defaults, no files.created_at, a global unique config
# name, and some plain id indexes this service does not create.
REFERENCE_SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO alembic_version (version_num) VALUES ('8403bb364491');
CREATE TYPE sendertype AS ENUM ('user', 'master_agent');
CREATE TABLE projects (id UUID NOT NULL, name VARCHAR NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_projects_id ON projects (id);
CREATE TABLE teams (id UUID NOT NULL, name VARCHAR NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE users (id UUID NOT NULL, username VARCHAR NOT NULL, password VARCHAR NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_users_id ON users (id);
CREATE UNIQUE INDEX ix_users_username ON users (username);
CREATE TABLE a2acards (id UUID NOT NULL, name VARCHAR, alias VARCHAR, description VARCHAR,
    server_url VARCHAR NOT NULL, card_content JSON NOT NULL, is_active BOOLEAN NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL, creator_id UUID,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_a2a_card_server_url UNIQUE (creator_id, server_url));
CREATE INDEX ix_a2acards_creator_id ON a2acards (creator_id);
CREATE INDEX ix_a2acards_id ON a2acards (id);
CREATE TABLE agents (id UUID NOT NULL, alias VARCHAR NOT NULL, name VARCHAR NOT NULL,
    description VARCHAR NOT NULL, jwt VARCHAR NOT NULL, creator_id UUID, input_parameters JSON NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    last_invoked_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL, is_active BOOLEAN NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE,
    UNIQUE (alias), UNIQUE (jwt));
CREATE INDEX ix_agents_creator_id ON agents (creator_id);
CREATE INDEX ix_agents_id ON agents (id);
CREATE TABLE agentworkflows (id UUID NOT NULL, alias VARCHAR NOT NULL, name VARCHAR NOT NULL,
    description VARCHAR NOT NULL, flow JSON NOT NULL, creator_id UUID, is_active BOOLEAN NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE, UNIQUE (alias));
CREATE INDEX ix_agentworkflows_creator_id ON agentworkflows (creator_id);
CREATE TABLE chatconversations (session_id UUID NOT NULL, title VARCHAR NOT NULL, creator_id UUID,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (session_id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_chatconversations_creator_id ON chatconversations (creator_id);
CREATE TABLE files (id UUID NOT NULL, session_id UUID, request_id UUID, creator_id UUID,
    mimetype VARCHAR NOT NULL, original_name VARCHAR NOT NULL, internal_name VARCHAR NOT NULL,
    internal_id UUID NOT NULL, from_agent BOOLEAN NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_files_creator_id ON files (creator_id);
CREATE INDEX ix_files_internal_id ON files (internal_id);
CREATE INDEX ix_files_request_id ON files (request_id);
CREATE INDEX ix_files_session_id ON files (session_id);
CREATE TABLE logs (id SERIAL NOT NULL, session_id UUID NOT NULL, request_id UUID NOT NULL, agent_id VARCHAR,
    creator_id UUID, created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    message VARCHAR NOT NULL, log_level VARCHAR NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_logs_agent_id ON logs (agent_id);
CREATE INDEX ix_logs_creator_id ON logs (creator_id);
CREATE INDEX ix_logs_request_id ON logs (request_id);
CREATE INDEX ix_logs_session_id ON logs (session_id);
CREATE TABLE mcpservers (id UUID NOT NULL, name VARCHAR, description VARCHAR, server_url VARCHAR NOT NULL,
    creator_id UUID, is_active BOOLEAN NOT NULL,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_mcp_server_url UNIQUE (creator_id, server_url));
CREATE INDEX ix_mcpservers_creator_id ON mcpservers (creator_id);
CREATE TABLE modelproviders (id UUID NOT NULL, name VARCHAR NOT NULL, api_key VARCHAR,
    provider_metadata JSON NOT NULL, creator_id UUID,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT uq_user_item_name UNIQUE (creator_id, name));
CREATE INDEX ix_modelproviders_creator_id ON modelproviders (creator_id);
CREATE TABLE modelconfigs (id UUID NOT NULL, name VARCHAR NOT NULL, model VARCHAR NOT NULL, provider_id UUID,
    system_prompt VARCHAR NOT NULL, user_prompt VARCHAR, max_last_messages INTEGER NOT NULL,
    temperature FLOAT NOT NULL, credentials JSON NOT NULL, creator_id UUID,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(creator_id) REFERENCES users (id) ON DELETE CASCADE,
    FOREIGN KEY(provider_id) REFERENCES modelproviders (id) ON DELETE CASCADE, UNIQUE (name));
CREATE INDEX ix_modelconfigs_creator_id ON modelconfigs (creator_id);
CREATE INDEX ix_modelconfigs_model ON modelconfigs (model);
CREATE INDEX ix_modelconfigs_provider_id ON modelconfigs (provider_id);
CREATE TABLE userprofiles (id UUID NOT NULL, first_name VARCHAR, last_name VARCHAR, user_id UUID,
    PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_userprofiles_user_id ON userprofiles (user_id);
CREATE TABLE user_project_associations (id SERIAL NOT NULL, user_id UUID NOT NULL, project_id UUID NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE,
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_user_project_associations_project_id ON user_project_associations (project_id);
CREATE INDEX ix_user_project_associations_user_id ON user_project_associations (user_id);
CREATE TABLE user_team_associations (id SERIAL NOT NULL, user_id UUID NOT NULL, team_id UUID NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(team_id) REFERENCES teams (id) ON DELETE CASCADE,
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE);
CREATE INDEX ix_user_team_associations_team_id ON user_team_associations (team_id);
CREATE INDEX ix_user_team_associations_user_id ON user_team_associations (user_id);
CREATE TABLE agent_project_associations (id SERIAL NOT NULL, agent_id UUID, project_id UUID,
    PRIMARY KEY (id), FOREIGN KEY(agent_id) REFERENCES agents (id) ON DELETE CASCADE,
    FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE);
CREATE TABLE agentflow_project_associations (id SERIAL NOT NULL, flow_id UUID, project_id UUID,
    PRIMARY KEY (id), FOREIGN KEY(flow_id) REFERENCES agentworkflows (id) ON DELETE CASCADE,
    FOREIGN KEY(project_id) REFERENCES projects (id) ON DELETE CASCADE);
CREATE TABLE chatmessages (id UUID NOT NULL, request_id UUID, sender_type sendertype NOT NULL,
    content VARCHAR NOT NULL, extra_metadata JSON,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL, conversation_id UUID,
    PRIMARY KEY (id), FOREIGN KEY(conversation_id) REFERENCES chatconversations (session_id) ON DELETE CASCADE);
CREATE INDEX ix_chatmessages_conversation_id ON chatmessages (conversation_id);
CREATE TABLE mcptools (id UUID NOT NULL, name VARCHAR NOT NULL, description VARCHAR, "inputSchema" JSON NOT NULL,
    annotations JSON, alias VARCHAR, mcp_server_id UUID,
    created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id), FOREIGN KEY(mcp_server_id) REFERENCES mcpservers (id) ON DELETE CASCADE);
CREATE INDEX ix_mcptools_mcp_server_id ON mcptools (mcp_server_id);
"""


def test_apply_migrations_takes_over_reference_database(server: EmbeddedPostgres, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(REFERENCE_SCHEMA)
    names = {name for (name,) in _fetch(dsn, "SELECT conname FROM pg_constraint")}
    assert {"modelconfigs_name_key", "agents_alias_key", "teams_name_key"} <= names  # built like the reference
    _insert_sample_rows(dsn)
    rows = _rows(dsn, USED_TABLES)
    started = _fetch(dsn, "SELECT localtimestamp")[0][0]

    assert apply_migrations(dsn) == ALL

    assert _rows(dsn, USED_TABLES) == rows
    assert _fetch(dsn, "SELECT version_num FROM alembic_version") == [("8403bb364491",)]
    filled = _fetch(dsn, "SELECT created_at FROM files")
    assert len(filled) == 1 and filled[0][0] >= started
    _assert_contract_schema(dsn)
    _assert_config_names_unique_per_user(dsn)
    with throwaway_database(server.dsn) as fresh:
        apply_migrations(fresh)
        assert _schema(dsn) == _schema(fresh)



def test_apply_migrations_warns_about_other_reference_revision(dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    _run(dsn, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
         "INSERT INTO alembic_version VALUES ('046a06a0b0a4')")
    with caplog.at_level("WARNING", logger="genai_backend.migrations"):
        assert apply_migrations(dsn) == ALL
    assert "046a06a0b0a4" in caplog.text
    caplog.clear()
    _run(dsn, "DELETE FROM alembic_version")  # emptied by the black-box tests: nothing to report
    _run(dsn, *(f'DELETE FROM "{table}"' for table in YOYO_TABLES))
    with caplog.at_level("WARNING", logger="genai_backend.migrations"):
        assert apply_migrations(dsn) == ALL
    assert caplog.text == ""


def test_apply_migrations_with_usernames_equal_after_nfkc(dsn: str) -> None:
    # A taken-over database may already hold `admin` and fullwidth `ａｄｍｉｎ`: 0005 must apply,
    # keep both accounts, give the key to the older one and refuse a third spelling afterwards.
    apply_migrations(dsn)
    later = ALL[ALL.index("0005_limits_and_usernames"):]
    assert rollback_migrations(dsn, len(later)) == later[::-1]
    older, newer = uuid.uuid4(), uuid.uuid4()
    _run(dsn, f"INSERT INTO users (id, username, password, created_at) VALUES "
              f"('{newer}', 'ａｄｍｉｎ', 'x', now() - interval '1 day'), ('{older}', 'admin', 'x', now() - interval '2 days')")
    assert apply_migrations(dsn) == later
    assert _fetch(dsn, "SELECT user_id, key FROM username_keys") == [(older, "admin")]
    assert len(_fetch(dsn, "SELECT id FROM users")) == 2
    with pytest.raises(psycopg.errors.UniqueViolation, match="username_keys_key_key"):
        _run(dsn, "INSERT INTO users (id, username, password) VALUES (gen_random_uuid(), 'ａdmin', 'x')")
    assert apply_migrations(dsn) == []
