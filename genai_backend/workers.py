"""`--workers N`: a supervisor that serves nothing itself and keeps N serving processes on one port."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnProcess
from types import FrameType

from genai_backend.config import ConfigError, Settings

log = logging.getLogger(__name__)

# A worker that lived shorter than this died "at once": the next start waits, doubling up to the cap.
STABLE_AFTER = 10.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# How long the workers may take to start (embedded server already up, migrations done).
READY_TIMEOUT = 120.0
# Their own graceful shutdown takes at most server.SHUTDOWN_TIMEOUT plus the pool and router.
STOP_TIMEOUT = 30.0

_PR_SET_PDEATHSIG = 1


@dataclass
class _Slot:
    index: int
    process: SpawnProcess | None = None
    ready: Connection | None = None
    started_at: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by kill -9."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return


def _worker_main(settings: Settings, index: int, ready: Connection, parent: int) -> None:
    """The entry point of a spawned worker: a fresh interpreter, no event loop inherited."""
    # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which then stops
    # the workers in order (and their bcrypt processes, in this group too, see no SIGINT).
    os.setpgid(0, 0)
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        return
    # By its module name: pickling a function of `python -m genai_backend`'s __main__ cannot work.
    from genai_backend.__main__ import prepare_process, serve_process

    # Spawned workers inherit the supervisor's environment, LOG_FORMAT included.
    prepare_process(settings.debug, os.environ.get("LOG_FORMAT", ""))

    def on_ready(url: str) -> None:
        log.debug("worker %d (pid %d) serving on %s", index, os.getpid(), url)
        ready.send(url)
        ready.close()

    try:
        serve_process(settings, reuse_port=True, on_ready=on_ready)
    except ConfigError as exc:
        log.error("worker %d: %s", index, exc)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        _shut_process_pools()


def _shut_process_pools() -> None:
    """Stop this worker's process pools (the bcrypt hashers) before multiprocessing's exit path.

    A multiprocessing child joins its own child processes before the interpreter's exit hooks
    run, and the hook that tells a ProcessPoolExecutor's processes to finish is one of those
    hooks: left to the normal order, the worker waits for its hashers and they wait for work.
    """
    from concurrent.futures import process

    exit_hook = getattr(process, "_python_exit", None)
    if callable(exit_hook):
        exit_hook()


def _probe_port(host: str, port: int) -> int:
    """Fail early, in one line, when the port is taken, and turn port 0 into a concrete one.

    Without SO_REUSEPORT on purpose: a socket that has it would silently share the port with
    another genai-backend already serving there with workers.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return int(probe.getsockname()[1])


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots = [_Slot(i) for i in range(1, settings.workers + 1)]
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # --- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("shutting down (%s): stopping %d workers", signal.Signals(signum).name, len(self.slots))
        self.stopping = True
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    # --- workers ----------------------------------------------------------------------------

    def _start(self, slot: _Slot, worker_settings: Settings) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main, name=f"genai-backend worker {slot.index}",
            args=(worker_settings, slot.index, send, os.getpid()))
        process.start()
        send.close()
        slot.process, slot.ready, slot.started_at, slot.restart_at = process, receive, time.monotonic(), None

    def _wait_ready(self, slots: list[_Slot]) -> list[str]:
        deadline = time.monotonic() + READY_TIMEOUT
        urls: list[str] = []
        pending = {s.ready: s for s in slots if s.ready is not None}
        while pending and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(f"workers did not start within {READY_TIMEOUT:g} s")
            for conn in wait([*pending, self._wake_r], left):
                if not isinstance(conn, Connection):
                    continue
                slot = pending.pop(conn)
                try:
                    urls.append(conn.recv())
                except EOFError:
                    code = slot.process.exitcode if slot.process is not None else None
                    if slot.process is not None:
                        slot.process.join(5)
                        code = slot.process.exitcode
                    raise ConfigError(f"worker {slot.index} exited during start-up (exit code {code}); "
                                      "see its log lines above") from None
                finally:
                    conn.close()
                    slot.ready = None
        return urls

    def _reap(self, slot: _Slot, now: float) -> None:
        process = slot.process
        assert process is not None
        process.join()
        lived = now - slot.started_at
        code = process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        slot.backoff = BACKOFF_INITIAL if lived >= STABLE_AFTER or not slot.backoff else min(
            slot.backoff * 2, BACKOFF_MAX)
        delay = 0.0 if lived >= STABLE_AFTER else slot.backoff
        log.warning("worker %d (pid %s) died after %.1f s (%s); restarting it%s", slot.index, process.pid, lived,
                    how, f" in {delay:g} s" if delay else "")
        slot.process = None
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        slot.restart_at = now + delay

    def _stop_all(self) -> None:
        alive = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in alive:
            process.terminate()  # SIGTERM: the worker's graceful shutdown
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker pid %s did not stop within %g s; killing it", process.pid, STOP_TIMEOUT)
                process.kill()
                process.join(5)

    def _loop(self, worker_settings: Settings) -> None:
        while not self.stopping:
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot, worker_settings)
                    log.info("worker %d restarted (pid %s)", slot.index, slot.process.pid if slot.process else "?")
            due = [s.restart_at for s in self.slots if s.process is None and s.restart_at is not None]
            timeout = max(0.0, min(due) - now) if due else None
            sentinels = {s.process.sentinel: s for s in self.slots if s.process is not None}
            ready_pipes = {s.ready: s for s in self.slots if s.ready is not None}
            for item in wait([*sentinels, *ready_pipes, self._wake_r], timeout):
                if isinstance(item, Connection):
                    slot = ready_pipes[item]
                    if slot.ready is not item:  # already reaped in this round
                        continue
                    try:
                        item.recv()
                    except EOFError:
                        pass
                    item.close()
                    slot.ready = None
                elif item == self._wake_r:
                    try:
                        os.read(self._wake_r, 512)
                    except BlockingIOError:
                        pass
                elif isinstance(item, int) and item in sentinels and not self.stopping:
                    self._reap(sentinels[item], time.monotonic())

    def run(self) -> None:
        from genai_backend.db import log_embedded, migrate_or_explain
        from genai_backend.embedded_db import EmbeddedPostgres

        settings = self.settings
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        embedded: EmbeddedPostgres | None = None
        try:
            if settings.database_dsn is None:
                # The supervisor owns the embedded server; the workers only connect to it.
                embedded = EmbeddedPostgres(settings.pgdata)
                dsn = embedded.start()
                log_embedded(settings.pgdata)
            else:
                dsn = settings.database_dsn
            if settings.apply_migrations:
                migrate_or_explain(dsn)  # once, here, before any worker serves
            port = _probe_port(settings.host, settings.port)
            worker_settings = replace(settings, port=port, apply_migrations=False, workers=1,
                                      embedded_dsn=dsn if embedded is not None else None)
            if self.stopping:
                return
            for slot in self.slots:
                self._start(slot, worker_settings)
            try:
                urls = self._wait_ready(self.slots)
            except ConfigError:
                self._stop_all()
                raise
            if urls and not self.stopping:
                pids = ", ".join(str(s.process.pid) for s in self.slots if s.process is not None)
                log.info("serving on %s (docs at /docs) with %d workers (pids %s)", urls[0], len(self.slots), pids)
            self._loop(worker_settings)
            self._stop_all()
        finally:
            if embedded is not None:
                embedded.stop()
                log.info("embedded PostgreSQL stopped")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
            log.info("stopped")


def supervise(settings: Settings) -> None:
    """Run `settings.workers` serving processes until SIGINT or SIGTERM."""
    Supervisor(settings).run()
