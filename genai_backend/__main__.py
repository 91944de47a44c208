"""Command line: `genai-backend [serve]` runs the service, `genai-backend migrate` applies migrations."""
from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import sys
from collections.abc import Callable

from genai_backend.config import ConfigError, Settings, from_env

log = logging.getLogger("genai_backend")


def _setup_logging(debug: bool, log_format: str = "") -> None:
    from genai_backend.observability.logs import configure

    configure(logging.DEBUG if debug else logging.INFO, log_format)
    # The router library logs every frame at INFO; keep ours readable.
    logging.getLogger("genai_session").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("yoyo").setLevel(logging.WARNING)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (what MALLOC_ARENA_MAX does) before any thread starts.

    glibc gives every thread that allocates an arena of its own; the bcrypt, scrypt and file
    threads made RSS with 128 chat sockets grow from ~130 MB to ~200 MB without this.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(-8, arenas)  # -8 = M_ARENA_MAX


async def _freeze_heap(app: object) -> None:
    # What start-up imported and built lives as long as the process. Frozen, the cyclic GC no
    # longer walks it on every full collection: one took ~30 ms before, a visible p99 stall.
    gc.collect()
    gc.freeze()


def prepare_process(debug: bool, log_format: str = "") -> None:
    """What every serving process does first: this one, and each spawned worker (workers.py)."""
    _setup_logging(debug, log_format)
    _limit_malloc_arenas()


def serve_process(settings: Settings, reuse_port: bool = False, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve from this process: the single process of --workers 1, or one worker (workers.py)."""
    from genai_backend.server import serve

    serve(settings, reuse_port=reuse_port, on_ready=on_ready, startup_hooks=[_freeze_heap])


def _serve(settings: Settings) -> None:
    if settings.workers > 1:
        from genai_backend.workers import supervise

        supervise(settings)
    else:
        serve_process(settings)


ROLLBACK_ALL = "all"


def _rollback_count(raw: str) -> int | str:
    """`--rollback N` (N >= 1) or `--rollback all`."""
    if raw.strip().lower() == ROLLBACK_ALL:
        return ROLLBACK_ALL
    try:
        count = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of migrations or '{ROLLBACK_ALL}', got {raw!r}") from None
    if count < 1:
        # 0 used to mean "all": a typo away from dropping every table.
        raise argparse.ArgumentTypeError(f"{count} is not a number of migrations; to roll back every migration "
                                         f"(dropping every table and all data) write --rollback {ROLLBACK_ALL} --yes")
    return count


def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    from genai_backend.db import migrate_or_explain
    from genai_backend.embedded_db import EmbeddedPostgres
    from genai_backend.migrations import RollbackRefused, rollback_migrations

    rolling_back = args.rollback is not None
    everything = args.rollback == ROLLBACK_ALL
    count: int | None = None if everything else args.rollback
    if everything and not args.yes:
        raise ConfigError(f"--rollback {ROLLBACK_ALL} drops every table and all data; add --yes to confirm")
    # join: a running service keeps its embedded server, and this command never stops it.
    embedded = EmbeddedPostgres(settings.pgdata) if settings.database_dsn is None else None
    dsn = embedded.start(join=True) if embedded is not None else settings.database_dsn
    assert dsn is not None
    try:
        if rolling_back:
            try:
                done = rollback_migrations(dsn, count, allow_all=everything)
            except RollbackRefused as exc:
                raise ConfigError(f"{exc}; to do that, write --rollback {ROLLBACK_ALL} --yes") from None
            print("rolled back:", ", ".join(done) or "nothing")
        else:
            done = migrate_or_explain(dsn)
            print("applied:", ", ".join(done) or "nothing (up to date)")
    finally:
        if embedded is not None:
            embedded.stop()


def _parser() -> argparse.ArgumentParser:
    """The command line; a new subcommand is one `sub.add_parser` here and one branch in `_run`."""
    parser = argparse.ArgumentParser(prog="genai-backend", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (default)")
    for p in (parser, serve):
        p.add_argument("--host", help="listen address (env HOST, default 0.0.0.0)")
        p.add_argument("--port", help="listen port (env PORT, default 8000; 0 = any free port)")
        p.add_argument("--workers", help="serving processes on the port (env WORKERS, default 1; auto = one per core)")
    migrate = sub.add_parser("migrate", help="apply pending migrations and exit")
    migrate.add_argument("--rollback", type=_rollback_count, metavar="N|all",
                         help=f"roll back the last N migrations, or every one with '{ROLLBACK_ALL}' (needs --yes)")
    migrate.add_argument("--yes", action="store_true", help=f"confirm --rollback {ROLLBACK_ALL}")
    rotate = sub.add_parser("rotate-secrets", help="re-encrypt stored secrets under SECRET_KEY and exit")
    rotate.add_argument("--batch-size", type=int, default=32, help="rows per transaction (default 32)")
    return parser


def _run(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "migrate":
        _migrate(settings, args)
    elif args.command == "rotate-secrets":
        from genai_backend.auth.rotation import rotate_command

        sys.exit(rotate_command(settings, args.batch_size))
    else:
        _serve(settings)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    environ = dict(os.environ)
    for option, variable in (("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        if getattr(args, option, None) is not None:
            environ[variable] = str(getattr(args, option))
    prepare_process(environ.get("DEBUG", "").lower() in {"1", "true", "yes", "on"}, environ.get("LOG_FORMAT", ""))
    try:
        settings = from_env(environ)
        _run(args, settings)
    except ConfigError as exc:
        print(f"genai-backend: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were installed (imports, configuration): no traceback.
        sys.exit(130)


if __name__ == "__main__":
    main()
