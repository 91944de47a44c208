"""A private PostgreSQL (the `pgserver` wheel) for when no database server is configured."""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start/stop wrapper; both calls block, so run them in an executor from async code."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: object | None = None

    def start(self) -> str:
        # Imported here: pgserver pulls psutil/fasteners and is not needed with an external server.
        import pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
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
        server = self._server
        self._stop_postmaster()
        if server is not None:
            # We stopped it; pgserver's own exit hook must not try again on a forgotten handle.
            atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
            server.global_process_id_list.get_and_remove(os.getpid())  # type: ignore[attr-defined]
            server._instances.pop(self.pgdata, None)  # type: ignore[attr-defined]
            self._server = None
        if delete:
            shutil.rmtree(self.pgdata, ignore_errors=True)

    def _stop_postmaster(self, timeout: float = 15) -> None:
        """Fast shutdown by signal, as `pg_ctl -m fast` does.

        Signalled directly rather than through pg_ctl: pg_ctl runs as the unprivileged `pgserver`
        user, which cannot always reach a data directory below a private (0700) parent, and a
        server left running after we exit is the one failure this must never have.
        """
        import psutil

        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            postmaster = psutil.Process(pid)
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return
        if postmaster.name() != "postgres":
            return  # a stale pid file naming some other process
        postmaster.send_signal(signal.SIGINT)
        try:
            postmaster.wait(timeout)
        except psutil.TimeoutExpired:
            log.warning("embedded PostgreSQL did not stop in %s s; killing it", timeout)
            postmaster.kill()
