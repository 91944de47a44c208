"""A private PostgreSQL (the `pgserver` wheel) for when no database server is configured."""
from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

from genai_backend.config import ConfigError

log = logging.getLogger(__name__)


class EmbeddedInUse(ConfigError):
    """Another live process owns the embedded server of this data directory."""


class EmbeddedPostgres:
    """Start/stop wrapper; both calls block, so run them in an executor from async code.

    The server of a data directory has exactly one owner: the process holding an exclusive
    `flock` on `<pgdata>.lock` beside it. The kernel drops that lock when its holder dies, even
    by kill -9, so a server left running by a dead owner is adopted by the next one, while a
    second process next to a live owner either refuses (`start()`) or joins as a guest
    (`start(join=True)`), and a guest never stops the server.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: object | None = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.pgdata.with_name(self.pgdata.name + ".lock")

    @property
    def owner(self) -> bool:
        """True while this handle owns the server (and will stop it)."""
        return self._lock_fd is not None

    def start(self, join: bool = False) -> str:
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if not self._take_ownership():
            holder = self._holder()
            if not join:
                raise EmbeddedInUse(
                    f"the embedded PostgreSQL in {self.pgdata} belongs to another running genai-backend"
                    f"{f' (pid {holder})' if holder else ''}; stop that one first, run more processes with "
                    "--workers, or point every process at one external PostgreSQL (POSTGRES_HOST)")
            if not self._running():
                raise EmbeddedInUse(f"the embedded PostgreSQL in {self.pgdata} is being started or stopped by "
                                    f"another process{f' (pid {holder})' if holder else ''}; try again")
            log.info("using the embedded PostgreSQL of the running process%s", f" {holder}" if holder else "")
        try:
            return self._open()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            # pgserver has logged the command's output; one line is enough here.
            self._release()
            raise ConfigError(f"the embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}); see the lines above and {self.pgdata / 'log'}") from None
        except BaseException:
            self._release()
            raise

    def _open(self) -> str:
        # Imported here: pgserver pulls psutil/fasteners and is not needed with an external server.
        import pgserver

        # cleanup_mode=None: we stop the server ourselves; pgserver's atexit hook would otherwise
        # race our explicit stop and a killed process could leave it half-stopped.
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, containers); harmless here.
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        return self.dsn

    @property
    def dsn(self) -> str:
        assert self._server is not None, "embedded PostgreSQL is not started"
        uri: str = self._server.get_uri()  # type: ignore[attr-defined]
        return uri

    def stop(self, delete: bool = False) -> None:
        """Stop the server if this handle owns it; a guest only lets go of its handle."""
        server = self._server
        if self.owner:
            self._stop_postmaster()
        if server is not None:
            # We stopped it; pgserver's own exit hook must not try again on a forgotten handle.
            atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
            server.global_process_id_list.get_and_remove(os.getpid())  # type: ignore[attr-defined]
            server._instances.pop(self.pgdata, None)  # type: ignore[attr-defined]
            self._server = None
        if delete and self.owner:
            shutil.rmtree(self.pgdata, ignore_errors=True)
        self._release()

    def _take_ownership(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # Who owns it, for the message a second process prints; the lock itself is the truth.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return True

    def _release(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def _holder(self) -> int | None:
        try:
            return int(self.lock_path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def _postmaster(self) -> object | None:
        import psutil

        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            postmaster = psutil.Process(pid)
            # A stale pid file may name some other process.
            return postmaster if postmaster.name() == "postgres" else None
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def _running(self) -> bool:
        return self._postmaster() is not None

    def _stop_postmaster(self, timeout: float = 15) -> None:
        """Fast shutdown by signal, as `pg_ctl -m fast` does.

        Signalled directly rather than through pg_ctl: pg_ctl runs as the unprivileged `pgserver`
        user, which cannot always reach a data directory below a private (0700) parent, and a
        server left running after we exit is the one failure this must never have.
        """
        import psutil

        postmaster = self._postmaster()
        if not isinstance(postmaster, psutil.Process):
            return
        postmaster.send_signal(signal.SIGINT)
        try:
            postmaster.wait(timeout)
        except psutil.TimeoutExpired:
            log.warning("embedded PostgreSQL did not stop in %s s; killing it", timeout)
            postmaster.kill()
