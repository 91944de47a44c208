"""`genai-backend` as a real process for tests: its environment, its log, and the URL it says it serves on."""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from genai_backend.embedded_db import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"serving on (http://\S+)")
# Variables of the developer's shell or `.env` that would point the process elsewhere.
_FOREIGN = ("SECRET_KEY", "MASTER_BE_API_KEY", "MASTER_AGENT_API_KEY", "POSTGRES_HOST", "SQLALCHEMY_ASYNC_DATABASE_URI",
            "PORT", "HOST", "WORKERS", "GENAI_DATA_DIR", "DEFAULT_FILES_FOLDER_NAME", "HEADER_READ_TIMEOUT", "BODY_READ_TIMEOUT")


@contextmanager
def scratch_dir(prefix: str = "genai-test-proc-") -> Iterator[Path]:
    """A directory for an embedded server, outside pytest's tmp_path.

    pg_ctl runs as the unprivileged `pgserver` user when we are root, and every pytest start
    (another run on this machine included) resets its base directory to 0700, which locks
    that user out of a data directory below it half-way through a test.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def service_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """An embedded-mode environment in `tmp` on any free port; `overrides` win."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env.update({"GENAI_DATA_DIR": str(tmp / "data"), "DEFAULT_FILES_FOLDER_NAME": str(tmp / "files"),
                "HOST": "127.0.0.1", "PORT": "0", "ROUTER_WS_URL": "ws://127.0.0.1:1/ws"})
    env.update(overrides)
    return env


def external_env(tmp: Path, dsn: str, **overrides: str) -> dict[str, str]:
    """An environment for an external database: with it come explicit keys, as production needs."""
    return service_env(tmp, SQLALCHEMY_ASYNC_DATABASE_URI=dsn, SECRET_KEY=secrets.token_hex(32),
                       MASTER_BE_API_KEY=f"{secrets.token_hex(16)}::master_server_be",
                       MASTER_AGENT_API_KEY=f"{secrets.token_hex(16)}::master_server_ml", **overrides)


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `genai-backend <args>` to completion."""
    return subprocess.run([sys.executable, "-m", "genai_backend", *args], env=dict(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _SERVING.search(self.log())
            if match:
                self.url = match.group(1)
                return self.url
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"service never said it was serving:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


@contextmanager
def running_service(env: Mapping[str, str], log_path: Path, args: tuple[str, ...] = ()) -> Iterator[Service]:
    """Start the service, wait for its "serving on" line, and make sure nothing of it outlives the test."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "genai_backend", *args], env=dict(env), cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
    service = Service(process, log_path)
    try:
        service.wait_serving()
        yield service
    finally:
        leftovers = service.descendants()
        if process.poll() is None:
            process.kill()
            process.wait(30)
        for child in leftovers:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        pgdata = Path(env.get("GENAI_DATA_DIR", "/nonexistent")) / "pgdata"
        if postgres_running(pgdata):
            # Its owner died without stopping it: adopt it, then stop it.
            orphan = EmbeddedPostgres(pgdata)
            orphan.start()
            orphan.stop()


def postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in " ".join(proc.info["cmdline"] or []):
            return True
    return False


async def wait_until_ready(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process | None = None,
                           log_path: Path | None = None, timeout: float = 60) -> None:
    """Poll `base`/ready until 200; fail with the process's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(f"{base}/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        alive = proc is None or proc.returncode is None
        detail = log_path.read_text() if log_path is not None and log_path.exists() else "service never became ready"
        assert alive and time.monotonic() < deadline, detail
        await asyncio.sleep(0.1)
