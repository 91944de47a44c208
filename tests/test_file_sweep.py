"""Uploads left on disk without a row (a kill -9 between the last write and the INSERT) are swept at start-up."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from genai_backend.app import create_app
from genai_backend.config import Settings
from genai_backend.db import POOL, queries
from genai_backend.jobs.locks import ORPHAN_SWEEP_LOCK
from genai_backend.storage import FILES, ORPHAN_GRACE, SWEEP, sweep_orphans


def _put(directory: Path, name: str, age: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"left behind")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


async def _with_row(db: asyncpg.Connection, internal_name: str) -> None:
    user_id, file_id = uuid.uuid4(), uuid.uuid4()
    await queries.create_user(db, user_id=user_id, username=f"u_{user_id.hex[:8]}", password="x")
    await queries.create_file(db, file_id=file_id, creator_id=user_id, session_id=None, request_id=None,
                              mimetype="text/plain", original_name="a.txt", internal_name=internal_name,
                              from_agent=False)


async def test_sweep_removes_only_old_uploads_without_a_row(aiohttp_client: Any, settings: Settings,
                                                            db: asyncpg.Connection) -> None:
    old = ORPHAN_GRACE + 60
    kept = f"{uuid.uuid4()}.bin"
    await _with_row(db, kept)
    files = settings.files_dir
    orphan = _put(files, f"{uuid.uuid4()}.txt", old)
    bare_orphan = _put(files, str(uuid.uuid4()), old)
    recent = _put(files, f"{uuid.uuid4()}.txt", 5)  # perhaps an upload whose row is being written
    with_row = _put(files, kept, old)
    not_ours = _put(files, "notes.txt", old)  # the directory may be shared: only our names count
    client = await aiohttp_client(create_app(settings))
    await client.app[SWEEP]
    assert not orphan.exists() and not bare_orphan.exists()
    assert recent.exists() and with_row.exists() and not_ours.exists()
    assert await sweep_orphans(client.app[FILES], client.app[POOL]) == 0


async def test_sweep_skips_while_another_process_sweeps(aiohttp_client: Any, settings: Settings,
                                                        db: asyncpg.Connection) -> None:
    client = await aiohttp_client(create_app(settings))
    await client.app[SWEEP]
    orphan = _put(settings.files_dir, f"{uuid.uuid4()}.pdf", ORPHAN_GRACE + 60)
    await db.execute("SELECT pg_advisory_lock($1)", ORPHAN_SWEEP_LOCK)
    try:
        assert await sweep_orphans(client.app[FILES], client.app[POOL]) == 0
        assert orphan.exists()
    finally:
        await db.execute("SELECT pg_advisory_unlock($1)", ORPHAN_SWEEP_LOCK)
    assert await sweep_orphans(client.app[FILES], client.app[POOL]) == 1
