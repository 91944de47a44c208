"""Uploaded files on disk, kept as `<uuid><suffix>`.

Only the server-chosen uuid and a sanitised suffix ever reach the filesystem; the client's file
name is data, stored in the database. Disk work runs in worker threads (D11).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import select
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import IO, Any

import asyncpg
from aiohttp import BodyPartReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_fileresponse import NOSENDFILE

from genai_backend.config import SETTINGS
from genai_backend.db import POOL, queries

log = logging.getLogger(__name__)

# Reads of this size keep the loop's work per chunk low; at most FLUSH + CHUNK bytes of an upload
# are held in memory before they go to disk (see Received).
CHUNK = 256 * 1024
FLUSH = 1024 * 1024
# os.writev takes at most IOV_MAX buffers; a slow sender can deliver many small chunks.
_IOV_MAX = 1024
# How long a download's worker thread waits for a reader that stopped reading (ms); after that
# the rest goes through the loop's flow control, which holds no thread.
_SEND_STALL_MS = 50
# `Path(name).suffix` as the reference computes it, kept only if it is a plain extension.
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9_+~-]{1,32}$")
# What `FileStore.receive` names a file; nothing else in the directory is ever swept.
_OUR_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.[A-Za-z0-9_+~-]{1,32})?$")
# An upload is written under its final name and gets its row right after its last write, so a
# file without a row whose last write is this old is left over from a killed process. An upload
# in progress writes at least every BODY_READ_TIMEOUT seconds, far below this.
ORPHAN_GRACE = 3600.0
_SWEEP_BATCH = 1000


class TooLarge(Exception):
    """The upload exceeded the configured maximum; nothing of it is left on disk."""


class SaveFailed(Exception):
    """The disk refused the upload (full, read-only, permissions)."""


def suffix_of(original_name: str) -> str:
    """The last dot-suffix of the final path component (`a.tar.gz` → `.gz`, `.bashrc` → ``)."""
    suffix = PurePosixPath(original_name.replace("\x00", "")).suffix
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


def is_plain_name(name: str) -> bool:
    """True for a name that stays inside the directory (what we write; rows taken over are checked)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


class FileStore:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, internal_name: str) -> Path | None:
        return self.directory / internal_name if is_plain_name(internal_name) else None

    async def ensure_directory(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    async def receive(self, part: BodyPartReader, file_id: uuid.UUID, suffix: str) -> Received:
        """Read one multipart part; TooLarge / SaveFailed leave nothing behind."""
        received = Received(self.directory / f"{file_id}{suffix}")
        try:
            while chunk := await part.read_chunk(CHUNK):
                if received.size + len(chunk) > self.max_bytes:
                    raise TooLarge()
                await received.append(chunk)
        except BaseException:
            received.discard()
            raise
        return received

    async def existing(self, internal_names: Iterable[str]) -> set[str]:
        """Which of these names are files on disk right now (one thread hop for all)."""
        names = [n for n in internal_names if is_plain_name(n)]
        if not names:
            return set()
        return await asyncio.to_thread(lambda: {n for n in names if (self.directory / n).is_file()})


def _write_all(fd: int, chunks: list[bytes]) -> None:
    views = [memoryview(c) for c in chunks if c]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


class Received:
    """An upload on its way to disk: `commit()` makes it durable, `discard()` removes it.

    Chunks are kept until more than FLUSH bytes are waiting, then written in one thread hop;
    `commit()` writes the rest, flushes and closes in one more. An upload of up to FLUSH bytes
    thus costs a single hop, and one refused before `commit()` (invalid form, 413) never touches
    the disk. The file is written under its final name: no row points at it before `commit()`
    has returned, so a partial file is never served, and a temporary name would cost a rename
    and a directory fsync per upload.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._pending: list[bytes] = []
        self._buffered = 0
        self._fd: int | None = None
        self._created = False
        # The disk job in flight: a cancelled await does not stop a thread, so clean-up waits for it.
        self._job: asyncio.Future[None] | None = None

    async def append(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._pending.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > FLUSH:
            await self._run(self._write, self._take())

    async def commit(self) -> None:
        await self._run(self._finish, self._take())

    def _take(self) -> list[bytes]:
        chunks, self._pending, self._buffered = self._pending, [], 0
        return chunks

    async def _run(self, job: Callable[[list[bytes]], None], chunks: list[bytes]) -> None:
        self._job = asyncio.get_running_loop().run_in_executor(None, job, chunks)
        try:
            await asyncio.shield(self._job)
        except OSError as exc:
            raise SaveFailed(str(exc)) from exc

    def _write(self, chunks: list[bytes]) -> None:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            try:
                self._fd = os.open(self.path, flags, 0o640)
            except FileNotFoundError:
                # The directory is made at start-up; this only recovers from its removal.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, flags, 0o640)
            self._created = True
        _write_all(self._fd, chunks)

    def _finish(self, chunks: list[bytes]) -> None:
        self._write(chunks)
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            # On disk before the row that points at it is written (on ext4 and xfs the name too:
            # it was created in an earlier journal transaction than the blocks). This is also what
            # keeps PostgreSQL's commits fast: left to background writeback, delayed allocation
            # gathers hundreds of MB into one ext4 journal commit, and every WAL fsync behind it
            # (the row's included) stalled for 0.2-1 s.
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Remove whatever was written, now or, if a disk job is still running, as soon as it ends.
        Synchronous on purpose: it also runs while being cancelled, and an unlink is a single
        metadata operation."""
        self._take()
        if self._job is not None and not self._job.done():
            self._job.add_done_callback(self._remove_after)
        else:
            self._remove()

    def _remove_after(self, job: asyncio.Future[None]) -> None:
        if not job.cancelled():
            job.exception()  # already reported as SaveFailed, or moot: the upload is gone
        self._remove()

    def _remove(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self._created:
            try:
                self.path.unlink()
            except OSError:
                pass


class FileDownload(web.FileResponse):
    """A FileResponse that sends the body with sendfile(2) in one worker-thread hop.

    aiohttp sends with `loop.sendfile`, which uvloop does not implement; its fallback reads
    256 KiB per thread hop and copies each chunk through the transport on the loop. Here the
    kernel moves the pages to the socket, and disk reads stay off the loop as before.
    """

    async def _sendfile(self, request: web.BaseRequest, fobj: IO[Any], offset: int,
                        count: int) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)  # sends the headers
        assert writer is not None
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        # Only a plain socket with nothing queued ahead of the body: the thread writes past the transport.
        if (NOSENDFILE or self.compression or sock is None or transport is None
                or transport.get_write_buffer_size() or transport.get_extra_info("sslcontext") is not None):
            return await self._sendfile_fallback(writer, fobj, offset, count)
        # Own duplicates: if the request is cancelled, the transport and the file are closed
        # while the thread may still be sending, and their numbers must not reach another file.
        sock_fd = os.dup(sock.fileno())
        try:
            file_fd = os.dup(fobj.fileno())
        except OSError:
            os.close(sock_fd)
            raise
        sent = await asyncio.get_running_loop().run_in_executor(None, _send_file, sock_fd, file_fd, offset, count)
        if sent < count:
            return await self._sendfile_fallback(writer, fobj, offset + sent, count - sent)
        await web.StreamResponse.write_eof(self)
        return writer


def _send_file(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    """sendfile(2) until done, the file ends early, or the reader stalls; closes both descriptors."""
    sent = 0
    poller: select.poll | None = None
    try:
        while sent < count:
            try:
                n = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(sock_fd, select.POLLOUT)
                if not poller.poll(_SEND_STALL_MS):
                    break
                continue
            if not n:
                break
            sent += n
    finally:
        os.close(sock_fd)
        os.close(file_fd)
    return sent


def _stale_names(directory: Path, grace: float) -> list[str]:
    cutoff = time.time() - grace
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                with suppress(OSError):
                    if (_OUR_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)
                            and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                        names.append(entry.name)
    except OSError:
        return []
    return names


def _unlink_all(directory: Path, names: list[str]) -> int:
    removed = 0
    for name in names:
        with suppress(FileNotFoundError):
            (directory / name).unlink()
            removed += 1
    return removed


async def sweep_orphans(store: FileStore, pool: asyncpg.Pool, grace: float = ORPHAN_GRACE) -> int:
    """Delete uploads older than `grace` that no `files` row names (left by a kill -9); returns how many."""
    from genai_backend.jobs.locks import ORPHAN_SWEEP_LOCK, job_lock

    candidates = await asyncio.to_thread(_stale_names, store.directory, grace)
    if not candidates:
        return 0
    async with job_lock(pool, ORPHAN_SWEEP_LOCK) as mine:
        if not mine:
            return 0  # another process of this service is sweeping the same directory
        orphans: list[str] = []
        for start in range(0, len(candidates), _SWEEP_BATCH):
            batch = candidates[start:start + _SWEEP_BATCH]
            known = {row["internal_name"] async for row in queries.list_file_internal_names(pool, names=batch)}
            orphans.extend(name for name in batch if name not in known)
        removed = await asyncio.to_thread(_unlink_all, store.directory, orphans)
    if removed:
        log.info("removed %d uploaded file(s) without a database row, older than %g s, from %s",
                 removed, grace, store.directory)
    return removed


FILES = web.AppKey("files", FileStore)
# The start-up sweep, for whoever must know it has finished (tests).
SWEEP = web.AppKey("orphan sweep", asyncio.Task)


async def _sweep_at_startup(store: FileStore, pool: asyncpg.Pool) -> None:
    try:
        await sweep_orphans(store, pool)
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("sweep of orphaned uploads in %s failed: %s", store.directory, exc)


async def files_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the files directory at start-up and sweep it in the background; a failure is logged,
    uploads then answer 500."""
    settings = app[SETTINGS]
    store = FileStore(settings.files_dir, settings.max_upload_bytes)
    try:
        await store.ensure_directory()
    except OSError as exc:
        log.error("cannot create the files directory %s: %s", settings.files_dir, exc)
    app[FILES] = store
    app[SWEEP] = sweep = asyncio.create_task(_sweep_at_startup(store, app[POOL]), name="orphaned upload sweep")
    try:
        yield
    finally:
        sweep.cancel()
        with suppress(asyncio.CancelledError):
            await sweep
