"""Finished answers of GET /api/agents/ and /api/agents/active, reused while nothing changed.

The master agent reads an owner's active catalogue on every chat message, and building it is most
of the work of a chat round trip, while catalogues change only when agents connect or someone edits
them. An answer is kept with the PostgreSQL snapshot it was read in; triggers (migration 0004)
record every change with its transaction id, so one indexed query says whether a change has been
committed since, whichever process or client made it. A stale answer is never served: the check is
against the database, not against notifications that could arrive late.
"""
from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from genai_backend.answers import Answer, Answers, Items
from genai_backend.db import queries

# Bounds on memory: most owners have one or two query variants in use.
MAX_ENTRIES = 2048
MAX_BODY = 1024 * 1024
# Older answers are rebuilt; rows of catalogue_changes older than twice this are pruned.
MAX_AGE = 600.0

# Adds the answer's rows to the items and returns items.array(...) (genai_backend/answers.py).
Build = Callable[[asyncpg.Connection, Items], Awaitable[Answer]]


@dataclass(slots=True)
class _Entry:
    body: bytes
    snapshot: str
    stored_at: float


class Catalogues:
    def __init__(self, answers: Answers, max_entries: int = MAX_ENTRIES, max_age: float = MAX_AGE) -> None:
        self.answers = answers
        self.max_entries = max_entries
        self.max_age = max_age
        self._entries: OrderedDict[tuple[Hashable, ...], _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def answer(self, pool: asyncpg.Pool, creator_id: uuid.UUID, variant: tuple[Hashable, ...],
                     build: Build) -> Answer:
        """The body `build` would give for this owner and query variant, built again only if needed."""
        key = (creator_id, *variant)
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry.stored_at < self.max_age:
            async with pool.acquire() as conn:
                changed = await queries.catalogue_changed_since(conn, creator_id=creator_id, snapshot=entry.snapshot)
            if not changed:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.body

        async def attempt(items: Items) -> tuple[Answer, str]:
            async with pool.acquire() as conn:
                # REPEATABLE READ: every statement of `build` sees the snapshot recorded with it.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    snapshot = await queries.current_snapshot(conn)
                    return await build(conn, items), snapshot

        body, snapshot = await self.answers.build(attempt, creator_id)
        self.misses += 1
        if isinstance(body, bytes) and len(body) <= MAX_BODY:
            # Two concurrent misses may both store; either answer is right for its own snapshot.
            self._entries[key] = _Entry(body, snapshot, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return body


CATALOGUES = web.AppKey("catalogues", Catalogues)
