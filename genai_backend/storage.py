"""Uploaded files on disk: streamed in under a temporary name, kept as `<uuid><suffix>`.

Only the server-chosen uuid and a sanitised suffix ever reach the filesystem; the client's file
name is data, stored in the database. Disk work runs in worker threads (D11).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path, PurePosixPath

from aiohttp import BodyPartReader, web

from genai_backend.config import SETTINGS

log = logging.getLogger(__name__)

# Reads of this size keep the number of thread hops low without holding much in memory.
CHUNK = 256 * 1024
FLUSH = 1024 * 1024
# `Path(name).suffix` as the reference computes it, kept only if it is a plain extension.
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9_+~-]{1,32}$")


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

    async def receive(self, part: BodyPartReader, file_id: uuid.UUID, suffix: str) -> "Received":
        """Stream one multipart part to a temporary file; TooLarge / SaveFailed leave nothing behind."""
        received = Received(self.directory / f".{file_id}.part", self.directory / f"{file_id}{suffix}")
        try:
            await received.open()
            buffer = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                received.size += len(chunk)
                if received.size > self.max_bytes:
                    raise TooLarge()
                buffer += chunk
                if len(buffer) >= FLUSH:
                    await received.write(bytes(buffer))
                    buffer.clear()
            if buffer:
                await received.write(bytes(buffer))
            await received.close()
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


class Received:
    """A file being written: `commit()` gives it its final name, `discard()` removes it."""

    def __init__(self, temporary: Path, final: Path) -> None:
        self.temporary = temporary
        self.final = final
        self.size = 0
        self._fd: int | None = None
        self._committed = False

    async def open(self) -> None:
        def create() -> int:
            self.temporary.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

        try:
            self._fd = await asyncio.to_thread(create)
        except OSError as exc:
            raise SaveFailed(str(exc)) from exc

    async def write(self, data: bytes) -> None:
        assert self._fd is not None
        fd = self._fd

        def write_all() -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        try:
            await asyncio.to_thread(write_all)
        except OSError as exc:
            raise SaveFailed(str(exc)) from exc

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                await asyncio.to_thread(os.close, fd)
            except OSError as exc:
                raise SaveFailed(str(exc)) from exc

    async def commit(self) -> None:
        try:
            await asyncio.to_thread(os.replace, self.temporary, self.final)
        except OSError as exc:
            raise SaveFailed(str(exc)) from exc
        self._committed = True

    def discard(self) -> None:
        """Remove whatever was written. Synchronous on purpose: it also runs while being
        cancelled, and an unlink is a single metadata operation."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        for path in (self.temporary, self.final) if self._committed else (self.temporary,):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass


FILES = web.AppKey("files", FileStore)


async def files_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the files directory at start-up; a failure is logged, uploads then answer 500."""
    settings = app[SETTINGS]
    store = FileStore(settings.files_dir, settings.max_upload_bytes)
    try:
        await store.ensure_directory()
    except OSError as exc:
        log.error("cannot create the files directory %s: %s", settings.files_dir, exc)
    app[FILES] = store
    yield
