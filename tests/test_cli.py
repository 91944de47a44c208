"""The command line as an operator meets it: real processes, their exit codes and what they print."""
from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from genai_backend.embedded_db import EmbeddedInUse, EmbeddedPostgres
from genai_backend.migrations import MIGRATIONS_DIR, apply_migrations
from tests.conftest import PASSWORD
from tests.pg import throwaway_database
from tests.service_process import external_env, postgres_running, run_cli, running_service, scratch_dir, service_env


@pytest.fixture
def scratch() -> Iterator[Path]:
    """For an embedded server: outside pytest's tmp_path (see service_process.scratch_dir)."""
    with scratch_dir() as path:
        yield path


pytestmark = pytest.mark.timeout(240)


async def _ready(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/ready") as resp:
        return resp.status


async def _register(url: str, username: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/register", json={"username": username, "password": PASSWORD}) as resp:
        return resp.status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


async def test_second_process_on_running_embedded_data_dir_leaves_it_running(scratch: Path) -> None:
    env = service_env(scratch)
    with running_service(env, scratch / "first.log") as first:
        # A second service on the same data directory refuses, in one line, and stops nothing.
        second = await asyncio.to_thread(run_cli, [], env)
        assert second.returncode == 2, second.stderr
        assert "belongs to another running genai-backend" in second.stderr
        assert "Traceback" not in second.stderr
        assert await _ready(first.url) == 200
        # `migrate` uses the running server and leaves it running.
        migrate = await asyncio.to_thread(run_cli, ["migrate"], env)
        assert migrate.returncode == 0, migrate.stderr
        assert "nothing (up to date)" in migrate.stdout
        assert await _ready(first.url) == 200
        assert await _register(first.url, "still_here") == 200
        assert first.stop() == 0
    assert not postgres_running(scratch / "data" / "pgdata")


def test_embedded_server_has_one_owner_and_a_guest_never_stops_it(scratch: Path) -> None:
    owner = EmbeddedPostgres(scratch / "pgdata")
    dsn = owner.start()
    try:
        with pytest.raises(EmbeddedInUse):
            EmbeddedPostgres(scratch / "pgdata").start()
        guest = EmbeddedPostgres(scratch / "pgdata")
        assert guest.start(join=True) == dsn
        assert not guest.owner
        guest.stop()
        assert postgres_running(scratch / "pgdata")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        owner.stop()
    assert not postgres_running(scratch / "pgdata")


def test_server_left_by_a_dead_owner_is_adopted_and_stopped(scratch: Path) -> None:
    first = EmbeddedPostgres(scratch / "pgdata")
    first.start()
    first._release()  # what the kernel does when the owner is killed: the lock goes, the server stays
    adopter = EmbeddedPostgres(scratch / "pgdata")
    adopter.start()
    assert adopter.owner
    adopter.stop()
    assert not postgres_running(scratch / "pgdata")


@pytest.fixture
def external_dsn(database_dsn: str, _truncate_sql: str) -> str:
    """The session's database, truncated after the test like every other test's."""
    return database_dsn


@pytest.fixture
def migrated_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    with throwaway_database(pg_server.dsn) as dsn:
        apply_migrations(dsn)
        yield dsn


def test_rollback_of_everything_needs_all_and_yes(migrated_dsn: str, tmp_path: Path) -> None:
    env = external_env(tmp_path, migrated_dsn)
    before = _tables(migrated_dsn)
    assert "users" in before
    zero = run_cli(["migrate", "--rollback", "0"], env)
    assert zero.returncode == 2
    assert "--rollback all --yes" in zero.stderr
    unconfirmed = run_cli(["migrate", "--rollback", "all"], env)
    assert unconfirmed.returncode == 2
    assert "add --yes" in unconfirmed.stderr
    # A count that reaches the first migration is "all" in disguise.
    counted = run_cli(["migrate", "--rollback", "99"], env)
    assert counted.returncode == 2, counted.stderr
    assert "--rollback all --yes" in counted.stderr
    assert _tables(migrated_dsn) == before
    one = run_cli(["migrate", "--rollback", "1"], env)
    assert one.returncode == 0, one.stderr
    newest = max(path.name.removesuffix(".sql") for path in MIGRATIONS_DIR.glob("*.sql")
                 if not path.name.endswith(".rollback.sql"))
    assert f"rolled back: {newest}" in one.stdout
    everything = run_cli(["migrate", "--rollback", "all", "--yes"], env)
    assert everything.returncode == 0, everything.stderr
    assert "users" not in _tables(migrated_dsn)


@pytest.mark.parametrize("port", ["70000", "-1", "eighty"])
def test_port_out_of_range_is_one_line(port: str, tmp_path: Path) -> None:
    result = run_cli([], service_env(tmp_path, PORT=port))
    assert result.returncode == 2
    assert "PORT must" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "pgdata").exists(), "nothing may start on a bad configuration"


def test_unreachable_external_database_is_one_line_and_nonzero(tmp_path: Path) -> None:
    env = external_env(tmp_path, f"postgresql://postgres:postgres@127.0.0.1:{_free_port()}/postgres")
    result = run_cli([], env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "cannot connect to PostgreSQL" in line]
    assert len(errors) == 1, result.stderr
    assert "serving on" not in result.stderr


def test_port_in_use_is_one_line(tmp_path: Path, external_dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = external_env(tmp_path, external_dsn, PORT=str(taken.getsockname()[1]))
        result = run_cli([], env)
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stderr


async def test_serving_line_comes_after_bind_and_ctrl_c_shuts_down_quietly(tmp_path: Path, external_dsn: str) -> None:
    env = external_env(tmp_path, external_dsn)
    with running_service(env, tmp_path / "service.log") as service:
        # The line names the bound port (PORT=0 here), so it can only be written after the bind.
        assert not service.url.endswith(":0")
        assert await _ready(service.url) == 200
        assert service.stop(signal.SIGINT) == 0
        log = service.log()
    assert "shutting down (SIGINT)" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert log.index("serving on") < log.index("shutting down") < log.index("stopped")
