"""List answers of any size in bounded memory: read and encoded batch by batch, large ones a few at a time.

A list answer used to be every row at once (asyncpg records), then one encoded body, then a copy
in the transport's buffer: about three times the answer, per request. Four concurrent requests for
one user's 150 large agents (a 109 MiB answer) took the process from 79 to 1668 MiB. Here:

- a short list (at most `FIRST_BATCH_ROWS` rows) is one plain query, as before; a longer one comes
  through a server-side cursor in batches of about `BATCH_BYTES`, and each batch is encoded at
  once and its records dropped, so the answer exists once, as encoded parts;
- an answer that grows past `LARGE_ANSWER` stops, gives its connection and parts back, and waits
  for one of this process's `LANES` (FIFO), then is built again there: however many large answers
  are asked for at once, at most `LANES` of them are in memory;
- a large answer is sent from its parts in slices, each awaited until the socket takes it, so the
  transport buffers a slice, not the answer; a client that stops reading for `SEND_TIMEOUT` is cut
  off, so a slow reader holds a lane only that long. The lane is released once the answer is sent.

Small answers (nearly all of them) are one `bytes`, as before, and are what the catalogue cache
keeps. The wire does not change: a large answer still has a Content-Length.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import asyncpg
from aiohttp import web

from genai_backend.db import queries
from genai_backend.fairqueue import FairQueue, QueueFull
from genai_backend.quotas import TooManyRequests
from genai_backend.responses import encode, encoded_json_response

log = logging.getLogger(__name__)

# Past this, an answer is built and sent only in one of the lanes.
LARGE_ANSWER = 8 * 1024 * 1024
# Large answers in memory at once, per process.
LANES = 2
# Lanes are handed out in turns by user, so one user's burst of large lists waits behind itself.
# Waiting places, per user and in all, per process; past them, a 429.
WAITING_PER_USER = 8
MAX_WAITING = 64
# Aimed size of one batch of rows; the first batch is `FIRST_BATCH_ROWS`, later ones follow the rows' size.
BATCH_BYTES = 2 * 1024 * 1024
FIRST_BATCH_ROWS = 16
MAX_BATCH_ROWS = 1000
# One slice of a large answer, and how long the client may take to accept it.
SEND_SLICE = 1024 * 1024
SEND_TIMEOUT = 30.0
RETRY_AFTER = 5.0

def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):
        return None  # not glibc


_malloc_trim = _libc_malloc_trim()

T = TypeVar("T")
Item = Callable[[asyncpg.Record], Any]


class _NeedsLane(Exception):
    """The answer outgrew `LARGE_ANSWER` outside a lane: start again in one."""


class TooManyLargeAnswers(TooManyRequests):
    def __init__(self) -> None:
        super().__init__("Too many large answers are waiting; try again shortly", RETRY_AFTER)


@dataclass
class Large:
    """An answer over `LARGE_ANSWER`: its encoded parts, and the lane it holds until it is sent."""

    parts: list[bytes]
    size: int
    answers: Answers


Answer = bytes | Large


class Items:
    """The encoded items of one JSON array, added batch by batch."""

    def __init__(self, answers: Answers, in_lane: bool) -> None:
        self._answers = answers
        self._in_lane = in_lane
        self._parts: list[bytes] = []
        self._size = 0
        self.count = 0
        # Set once a Large answer carries the lane away (then its sender releases it).
        self.handed_over = False

    def add(self, batch: list[Any]) -> None:
        if not batch:
            return
        part = encode(batch)[1:-1]
        self._parts.append(part)
        self._size += len(part) + 1
        self.count += len(batch)
        if not self._in_lane and self._size > self._answers.large:
            raise _NeedsLane

    async def batches(self, conn: asyncpg.Connection, query: Any, **params: Any) -> AsyncIterator[list[asyncpg.Record]]:
        """The rows of an aiosql `query` in batches of about BATCH_BYTES, read by a cursor.

        The caller adds each batch before asking for the next: the size of what it added sets the
        size of the next batch. `conn` must be in a transaction (a cursor lives in one).
        """
        args = queries.driver_adapter.maybe_order_params(query.__name__, params)
        cursor = await conn.cursor(query.sql, *args)
        rows_wanted = FIRST_BATCH_ROWS
        while True:
            rows = await cursor.fetch(rows_wanted)
            if not rows:
                return
            last = len(rows) < rows_wanted
            before = self._size
            yield rows
            if last:
                return
            per_row = max(1, (self._size - before) // len(rows))
            rows_wanted = max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // per_row))

    async def fetch(self, db: asyncpg.Pool | asyncpg.Connection, query: Any, item: Item = dict,
                    **params: Any) -> None:
        """Add what `item` makes of each row of an aiosql `query` (None: left out).

        A paged query (with `offset` and `limit`) is first asked for at most FIRST_BATCH_ROWS rows
        in one plain round trip: most lists are that short, and a cursor costs a transaction and
        two or three more round trips (measured: GET /api/chats lost 40 % of its throughput).
        A longer list is then read again from the start, by a cursor, in one snapshot.
        """
        limit = params.get("limit")
        if limit is not None and "offset" in params:
            probe = min(limit, FIRST_BATCH_ROWS)
            rows = [row async for row in query(db, **{**params, "limit": probe})]
            if len(rows) < probe or probe == limit:
                self.add([made for made in map(item, rows) if made is not None])
                return
            del rows
        async with _in_transaction(db) as conn:
            async for batch in self.batches(conn, query, **params):
                self.add([made for made in map(item, batch) if made is not None])

    def array(self, head: dict[str, Any] | None = None, key: str = "") -> Answer:
        """The JSON array of the items; with `head`, the object `head` with the array as its last member `key`."""
        if head is None:
            prefix, suffix = b"[", b"]"
        else:
            opening = encode(head)[:-1]
            prefix = opening + (b"," if head else b"") + encode(key) + b":["
            suffix = b"]}"
        # The parts are joined by commas; the prefix and suffix wrap them.
        pieces = [prefix]
        for index, part in enumerate(self._parts):
            if index:
                pieces.append(b",")
            pieces.append(part)
        pieces.append(suffix)
        self._parts = []
        if not self._in_lane:
            return b"".join(pieces)
        self.handed_over = True
        return Large(pieces, sum(map(len, pieces)), self._answers)


class Answers:
    """This process's lanes for large answers (app key ANSWERS)."""

    def __init__(self, lanes: int = LANES, large: int = LARGE_ANSWER, send_timeout: float = SEND_TIMEOUT) -> None:
        self.lanes = lanes
        self.large = large
        self.send_timeout = send_timeout
        self._turns = FairQueue(max_waiting=MAX_WAITING, per_key=WAITING_PER_USER)
        # Read by /metrics (with `waiting`).
        self.in_memory = 0
        self._trim: asyncio.Future[Any] | None = None

    @property
    def waiting(self) -> int:
        return self._turns.waiting

    async def build(self, attempt: Callable[[Items], Awaitable[T]], owner: Hashable) -> T:
        """`attempt(items)` outside a lane; if its answer turns out large, again inside one.

        Lanes go in turns by `owner` (the user); with no place left to wait, a 429.
        """
        try:
            return await attempt(Items(self, in_lane=False))
        except _NeedsLane:
            pass
        try:
            await self._turns.acquire(owner, self.lanes)
        except QueueFull:
            raise TooManyLargeAnswers() from None
        self.in_memory += 1
        items = Items(self, in_lane=True)
        try:
            result = await attempt(items)
        except BaseException:
            self.release()
            raise
        if not items.handed_over:
            # Smaller the second time (rows deleted meanwhile): nothing holds the lane.
            self.release()
        return result

    def release(self) -> None:
        self.in_memory -= 1
        self._turns.release()
        if self.in_memory == 0 and self.waiting == 0 and _malloc_trim is not None:
            # The parts were large blocks from malloc's heap, which keeps freed memory for reuse:
            # once no large answer is left, it goes back to the system (bench_lists.py: the process
            # kept 253 MiB after a burst of 109 MiB answers, and keeps 78 with this; idle is 80).
            self._trim = asyncio.get_running_loop().run_in_executor(None, _malloc_trim, 0)

    async def rows(self, pool: asyncpg.Pool, owner: Hashable, query: Any, item: Item = dict,
                   **params: Any) -> Answer:
        """The JSON array of one query's rows (the common list endpoint) for `owner`."""
        async def attempt(items: Items) -> Answer:
            await items.fetch(pool, query, item, **params)
            return items.array()

        return await self.build(attempt, owner)


async def respond(request: web.Request, answer: Answer) -> web.StreamResponse:
    """The response for an answer; a large one is sent here, in slices, and its lane released."""
    if isinstance(answer, bytes):
        return encoded_json_response(answer)
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = answer.size
        await response.prepare(request)
        for part in answer.parts:
            view = memoryview(part)
            for start in range(0, len(view), SEND_SLICE):
                timeout = answer.answers.send_timeout
                try:
                    async with asyncio.timeout(timeout):
                        await response.write(view[start:start + SEND_SLICE])
                except TimeoutError:
                    log.info("client stopped reading a %d-byte answer for %g s; closing", answer.size, timeout)
                    _reset(request)
                    raise ConnectionResetError("client too slow") from None
        await response.write_eof()
        return response
    finally:
        answer.parts.clear()
        answer.answers.release()


@asynccontextmanager
async def _in_transaction(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction: the caller's own, or a read-only one of the pool's."""
    if isinstance(db, asyncpg.Connection) and db.is_in_transaction():
        yield db
        return
    async with AsyncExitStack() as stack:
        conn = db if isinstance(db, asyncpg.Connection) else await stack.enter_async_context(db.acquire())
        await stack.enter_async_context(conn.transaction(readonly=True))
        yield conn


def _reset(request: web.Request) -> None:
    """Close with a reset: the kernel drops what it still holds for this client (megabytes, here)."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


ANSWERS = web.AppKey("answers", Answers)
