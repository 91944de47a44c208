"""SECRET_KEY rotation: the start-up check of the configured keys, and re-encrypting stored secrets."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web

from genai_backend.auth import secrets, tokens
from genai_backend.config import SETTINGS, ConfigError, Settings
from genai_backend.db import POOL, queries

log = logging.getLogger(__name__)

BATCH_SIZE = 32
# Unmarked secrets tried at start-up (each costs one scrypt per configured key).
SAMPLE = 3
_NO_ID = uuid.UUID(int=0)
# (claim query, store query) per table holding secrets.
_TABLES = {"modelproviders": ("claim_provider_secrets", "store_provider_secret"),
           "mcpservers": ("claim_mcp_secrets", "store_mcp_secret")}

WRONG_KEY = ("{count} stored secret(s) were encrypted with a key that is neither SECRET_KEY nor one of "
             "SECRET_KEY_PREVIOUS: set SECRET_KEY_PREVIOUS to the key they were written with (a wrong "
             "or missing previous key makes provider keys and MCP credentials unreadable)")


async def check_keys(pool: asyncpg.Pool, keys: Sequence[str]) -> None:
    """Refuse to start when stored secrets exist that none of `keys` decrypts (ConfigError).

    Secrets with a recorded key fingerprint are checked exactly and cheaply; of the others (the
    reference's rows, rows written before fingerprints) a few are decrypted for real.
    """
    known = {secrets.key_id(key) for key in keys}
    counts = [row async for row in queries.count_secrets_by_key_id(pool)]
    foreign = sum(int(row["n"]) for row in counts if row["secret_key_id"] not in (None, *known))
    if foreign:
        raise ConfigError(WRONG_KEY.format(count=foreign))
    unreadable = 0
    async for row in queries.sample_unmarked_secrets(pool, limit=SAMPLE):
        if not secrets.well_formed(row["secret"]):
            continue  # not a ciphertext at all: no key could be the right one
        try:
            await secrets.decrypt(row["secret"], keys)
        except secrets.InvalidCiphertext:
            unreadable += 1
    if unreadable:
        raise ConfigError(WRONG_KEY.format(count=f"at least {unreadable}"))


async def check_keys_ctx(app: web.Application) -> AsyncIterator[None]:
    await check_keys(app[POOL], app[SETTINGS].secret_keys)
    yield


@dataclass
class RotationReport:
    reencrypted: int = 0  # were under a previous (or unrecorded) key, now under the current one
    already_current: int = 0  # were under the current key; only its fingerprint was recorded
    unreadable: list[str] = field(default_factory=list)  # "<table> <id>": no configured key opens it
    changed_meanwhile: int = 0  # rewritten by someone else between claim and store (already current)
    remaining: int = 0  # not under the current key afterwards (unreadable, or held by others)
    agent_tokens: int = 0  # stored agent JWTs of a previous key, signed again with the current one
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"re-encrypted {self.reencrypted}, already under the current key {self.already_current}, "
                f"unreadable {len(self.unreadable)}, changed meanwhile {self.changed_meanwhile}, "
                f"remaining {self.remaining}, agent tokens re-signed {self.agent_tokens}, "
                f"in {self.seconds:.1f} s")


async def rotate_secrets(pool: asyncpg.Pool, keys: Sequence[str], batch_size: int = BATCH_SIZE) -> RotationReport:
    """Re-encrypt every stored secret under `keys[0]`, in batches; safe to run beside the service and
    beside other rotations (rows are claimed with FOR UPDATE SKIP LOCKED and stored by compare-and-set),
    and to run again after an interruption (finished rows carry the current key's fingerprint)."""
    started = time.perf_counter()
    current = keys[0]
    current_id = secrets.key_id(current)
    report = RotationReport()
    for table, (claim, store) in _TABLES.items():
        skip: list[uuid.UUID] = []
        # Passes until one finds nothing to do: a pass skips rows others hold at that moment.
        while await _pass(pool, table, claim, store, keys, current_id, skip, batch_size, report):
            pass
    await _resign_agent_tokens(pool, keys, batch_size * 32, report)
    report.remaining = await queries.count_secrets_not_under(pool, key_id=current_id)
    report.seconds = time.perf_counter() - started
    return report


async def _pass(pool: asyncpg.Pool, table: str, claim: str, store: str, keys: Sequence[str], current_id: str,
                skip: list[uuid.UUID], batch_size: int, report: RotationReport) -> bool:
    after, progressed = _NO_ID, False
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = [row async for row in getattr(queries, claim)(
                conn, key_id=current_id, after=after, skip=skip, limit=batch_size)]
            if not rows:
                return progressed
            after = rows[-1]["id"]
            # scrypt runs in threads: the whole batch at once uses every core.
            opened = await asyncio.gather(*(_open(row["secret"], row["secret_key_id"], keys) for row in rows))
            stale = [plaintext for plaintext, key in filter(None, opened) if key != keys[0]]
            fresh = iter(await asyncio.to_thread(secrets.encrypt_many_sync, stale, keys[0]) if stale else [])
            for row, result in zip(rows, opened):
                if result is None:
                    skip.append(row["id"])
                    report.unreadable.append(f"{table} {row['id']}")
                    continue
                was_current = result[1] == keys[0]
                new = row["secret"] if was_current else next(fresh)
                stored = await getattr(queries, store)(conn, id=row["id"], old=row["secret"], new=new,
                                                       key_id=current_id)
                if stored is None:
                    report.changed_meanwhile += 1
                elif was_current:
                    report.already_current += 1
                else:
                    report.reencrypted += 1
                progressed = True
        log.info("rotate-secrets: %s up to %s: %s", table, after, report.summary())


async def _resign_agent_tokens(pool: asyncpg.Pool, keys: Sequence[str], batch_size: int,
                               report: RotationReport) -> None:
    """Stored agent JWTs valid under a previous key get the same claims signed with the current one,
    so owners can fetch a token that outlives the previous key (running agents keep theirs meanwhile)."""
    after = _NO_ID
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = [row async for row in queries.claim_agent_tokens(conn, after=after, limit=batch_size)]
            if not rows:
                return
            after = rows[-1]["id"]
            for row in rows:
                if row["creator_id"] is None or not _needs_resigning(row["jwt"], keys):
                    continue
                new = tokens.issue_agent_token(row["id"], row["creator_id"], keys[0])
                if await queries.store_agent_token(conn, id=row["id"], old=row["jwt"], new=new) is not None:
                    report.agent_tokens += 1


def _needs_resigning(token: str, keys: Sequence[str]) -> bool:
    try:
        tokens.decode(token, keys[0])
        return False
    except tokens.InvalidToken:
        pass
    try:
        tokens.decode(token, keys[1:])
        return True
    except tokens.InvalidToken:
        return False  # not ours at all: nothing to sign again


async def _open(token: str, recorded: str | None, keys: Sequence[str]) -> tuple[str, str] | None:
    """(plaintext, the key that opened it), or None when no configured key does."""
    # Each try costs a scrypt: the recorded key first, then the previous keys (a claimed row is
    # not recorded as under the current key, so it most likely is under a previous one).
    order = sorted([*keys[1:], keys[0]], key=lambda key: secrets.key_id(key) != recorded)
    try:
        return await secrets.decrypt_with_key(token, order)
    except secrets.InvalidCiphertext:
        return None



def rotate_command(settings: Settings, batch_size: int) -> int:
    """`genai-backend rotate-secrets`: prints the counts; exit status 1 while anything is left."""
    from genai_backend.db import create_pool
    from genai_backend.embedded_db import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.pgdata) if settings.database_dsn is None else None
    # A running service's embedded server is shared, and must be left running afterwards.
    shared = embedded is not None and (settings.pgdata / "postmaster.pid").exists()
    dsn = embedded.start() if embedded is not None else settings.database_dsn
    assert dsn is not None

    async def run() -> RotationReport:
        pool = await create_pool(dsn, 1, 2)
        try:
            return await rotate_secrets(pool, settings.secret_keys, max(batch_size, 1))
        finally:
            await pool.close()

    try:
        report = asyncio.run(run())
    finally:
        if embedded is not None and not shared:
            embedded.stop()
    print(f"rotate-secrets: {report.summary()}")
    for row in report.unreadable:
        print(f"rotate-secrets: unreadable under every configured key: {row}")
    return 1 if report.remaining else 0
