"""`genai-backend --workers 2` as a real process tree: serves, restarts a killed worker, stops cleanly."""
from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import aiohttp
import psutil
import pytest

from genai_backend.workers import STABLE_AFTER
from tests.conftest import PASSWORD
from tests.service_process import Service, postgres_running, running_service, scratch_dir, service_env


@pytest.fixture
def scratch() -> Iterator[Path]:
    """For an embedded server: outside pytest's tmp_path (see service_process.scratch_dir)."""
    with scratch_dir() as path:
        yield path


pytestmark = pytest.mark.timeout(300)


def _workers(service: Service) -> list[psutil.Process]:
    """The serving workers: the supervisor's direct children that listen on the port."""
    port = int(service.url.rsplit(":", 1)[1])
    found = []
    for child in psutil.Process(service.process.pid).children():
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp")):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def _wait_for(condition: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_two_workers_serve_restart_and_stop_with_the_embedded_database(scratch: Path) -> None:
    env = service_env(scratch, WORKERS="2")
    pgdata = scratch / "data" / "pgdata"
    with running_service(env, scratch / "service.log") as service:
        supervisor = psutil.Process(service.process.pid)
        # The supervisor itself does not serve.
        assert not [c for c in supervisor.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        await _wait_for(lambda: len(_workers(service)) == 2, "two workers listening on the port")
        first = {p.pid for p in _workers(service)}

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{service.url}/api/register",
                                 json={"username": "multi", "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
            # Written through one worker, seen by whichever answers a new connection.
            async with aiohttp.ClientSession() as fresh, fresh.post(
                    f"{service.url}/api/login/access-token", data={"username": "multi", "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()

            victim = psutil.Process(next(iter(first)))
            # Its bcrypt processes outlive a kill -9 until auth/passwords.py ties them to their parent.
            orphans = victim.children(recursive=True)
            victim.kill()
            await _wait_for(lambda: len(_workers(service)) == 2 and {p.pid for p in _workers(service)} != first,
                            "the killed worker was not replaced")
            for _ in range(20):  # fresh connections land on both workers
                async with aiohttp.ClientSession() as fresh, fresh.get(f"{service.url}/ready") as resp:
                    assert resp.status == 200
            assert "died after" in service.log() and "restarted" in service.log()

            # A replacement that dies at once is restarted after a back-off, not in a tight loop.
            second = {p.pid for p in _workers(service)}
            replacement = psutil.Process(next(iter(second - first)))
            orphans += replacement.children(recursive=True)
            replacement.kill()
            await _wait_for(lambda: len(_workers(service)) == 2 and {p.pid for p in _workers(service)} != second,
                            "the replacement was not replaced")
            deaths = re.findall(r"died after ([0-9.]+) s \(signal SIGKILL\); restarting it( in [0-9.]+ s)?",
                                service.log())
            assert len(deaths) == 2, service.log()
            lived, delay = float(deaths[1][0]), deaths[1][1]
            # Whether it counts as "at once" depends on how long this machine took to start it.
            assert bool(delay) == (lived < STABLE_AFTER), deaths

        everyone = [supervisor, *supervisor.children(recursive=True)]
        assert service.stop(signal.SIGTERM) == 0
        log = service.log()
    for orphan in orphans:
        with suppress(psutil.NoSuchProcess):
            orphan.kill()
    gone, alive = psutil.wait_procs(everyone, timeout=30)
    assert not alive, f"left running: {alive}"
    assert not postgres_running(pgdata), "the embedded PostgreSQL outlived the supervisor"
    assert "Traceback" not in log, log
    assert "shutting down (SIGTERM)" in log
    # Migrations ran once, in the supervisor, before any worker started.
    assert log.count("applied migrations") == 1


async def test_workers_die_with_a_killed_supervisor(tmp_path: Path, database_dsn: str, _truncate_sql: str) -> None:
    from tests.service_process import external_env

    with running_service(external_env(tmp_path, database_dsn, WORKERS="2"), tmp_path / "service.log") as service:
        await _wait_for(lambda: len(_workers(service)) == 2, "two workers listening on the port")
        workers = _workers(service)
        service.process.kill()
        service.process.wait(30)
        gone, alive = psutil.wait_procs(workers, timeout=60)
        assert not alive, f"workers outlived their supervisor: {alive}"
