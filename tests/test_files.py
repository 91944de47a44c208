"""File upload, download and metadata (rest-api #39-#43) against the real database and a temp files dir."""
from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from genai_backend import storage
from genai_backend.app import create_app
from genai_backend.config import SETTINGS, Settings
from genai_backend.db import queries
from tests.bus_fixtures import register_agent
from tests.conftest import User, make_user

BOUNDARY = "----genai-test-boundary"


def multipart(parts: Sequence[tuple[str, str | None, bytes, str | None]]) -> tuple[bytes, dict[str, str]]:
    """A hand-built multipart body: (name, filename, content, content type) per part, bytes exactly as given."""
    body = bytearray()
    for name, filename, content, ctype in parts:
        body += f"--{BOUNDARY}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += disposition.encode("utf-8") + b"\r\n"
        if ctype is not None:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + content + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return bytes(body), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


async def upload(client: TestClient, user: User, content: bytes = b"hello", filename: str = "notes.txt",
                 ctype: str | None = "text/plain", extra: Sequence[tuple[str, str | None, bytes, str | None]] = (),
                 status: int = 201) -> Any:
    body, headers = multipart([("file", filename, content, ctype), *extra])
    resp = await client.post("/files", data=body, headers={**headers, **user.headers})
    assert resp.status == status, await resp.text()
    return await resp.json()


def files_on_disk(client: TestClient) -> list[str]:
    directory: Path = client.app[SETTINGS].files_dir
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.fixture
async def small_client(settings: Settings, aiohttp_client: Any) -> TestClient:
    """An app whose upload limit is 64 KiB."""
    return await aiohttp_client(create_app(replace(settings, max_upload_bytes=64 * 1024)))


async def test_upload_file_and_read_metadata(client: TestClient, user: User) -> None:
    name = "%2Fhome%2Fuser%2Ftest.pdf"
    created = await upload(client, user, b"%PDF-1.4", name, "application/pdf",
                           extra=[("json_field", None, b'{"a": 1}', None)])
    file_id = created["id"]
    assert set(created) == {"id"}
    resp = await client.get(f"/files/{file_id}/metadata", headers=user.headers)
    assert resp.status == 200
    assert await resp.json() == {"id": file_id, "session_id": None, "request_id": None, "original_name": name,
                                 "mimetype": "application/pdf", "internal_id": file_id,
                                 "internal_name": f"{file_id}.pdf", "from_agent": False, "creator_id": user.id}
    assert files_on_disk(client) == [f"{file_id}.pdf"]


async def test_upload_empty_file_and_download_it(client: TestClient, user: User) -> None:
    file_id = (await upload(client, user, b"", "empty", None))["id"]
    resp = await client.get(f"/files/{file_id}", headers=user.headers)
    assert resp.status == 200
    assert await resp.read() == b""
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{file_id}"'


async def test_download_file_types_and_headers(client: TestClient, user: User) -> None:
    for ctype, expected, content in (("text/html", "text/html; charset=utf-8", b"<p>hi</p>"),
                                     ("text/plain", "text/plain; charset=utf-8", "héllo".encode()),
                                     ("text/csv; charset=latin-1", "text/csv; charset=latin-1", b"a,b"),
                                     ("image/png", "image/png", bytes(range(256)))):
        file_id = (await upload(client, user, content, "f.bin", ctype))["id"]
        resp = await client.get(f"/files/{file_id}", headers=user.headers)
        assert resp.status == 200
        assert await resp.read() == content
        assert resp.headers["Content-Type"] == expected
        assert resp.headers["Content-Length"] == str(len(content))
        assert resp.headers["Content-Disposition"] == f'attachment; filename="{file_id}.bin"'
        assert "ETag" in resp.headers and "Last-Modified" in resp.headers
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_upload_large_file_is_streamed(client: TestClient, user: User) -> None:
    # Far above the 1 MiB JSON body limit: only a streaming reader can take it.
    content = os.urandom(5 * 1024 * 1024 + 17)
    file_id = (await upload(client, user, content, "big.bin", "application/octet-stream"))["id"]
    resp = await client.get(f"/files/{file_id}", headers=user.headers)
    assert await resp.read() == content
    resp = await client.get(f"/files/{file_id}", headers={**user.headers, "Range": "bytes=0-9"})
    assert resp.status == 206 and await resp.read() == content[:10]


async def test_upload_file_at_limit_and_one_byte_over(small_client: TestClient, password_hash: str, db) -> None:
    user = await make_user(small_client, password_hash)
    limit = 64 * 1024
    await upload(small_client, user, b"x" * limit, "at-limit.txt")
    assert len(files_on_disk(small_client)) == 1
    body = await upload(small_client, user, b"x" * (limit + 1), "over.txt", status=413)
    assert body == {"detail": f"File is too large: the limit is {limit} bytes"}
    assert len(files_on_disk(small_client)) == 1
    assert await db.fetchval("SELECT count(*) FROM files") == 1
    await upload(small_client, user, os.urandom(limit * 20), "way-over.bin", status=413)
    assert len(files_on_disk(small_client)) == 1


async def test_upload_spilled_to_disk_in_batches(small_client: TestClient, password_hash: str, db,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Small reads and batches: the file is created and written to before the part has ended.
    monkeypatch.setattr(storage, "CHUNK", 4096)
    monkeypatch.setattr(storage, "FLUSH", 8192)
    user = await make_user(small_client, password_hash)
    limit = 64 * 1024
    content = os.urandom(limit)
    file_id = (await upload(small_client, user, content, "spilled.bin"))["id"]
    resp = await small_client.get(f"/files/{file_id}", headers=user.headers)
    assert await resp.read() == content
    await upload(small_client, user, os.urandom(limit + 1), "over.bin", status=413)
    assert files_on_disk(small_client) == [f"{file_id}.bin"]
    assert await db.fetchval("SELECT count(*) FROM files") == 1


async def test_upload_cancelled_during_commit_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancelled await does not stop the disk thread: the file it creates afterwards must go too.
    started, release, written = threading.Event(), threading.Event(), threading.Event()
    write = storage.Received._write

    def held_write(self: storage.Received, chunks: list[bytes]) -> None:
        started.set()
        release.wait(10)
        write(self, chunks)
        written.set()

    monkeypatch.setattr(storage.Received, "_write", held_write)
    received = storage.Received(tmp_path / "upload.bin")
    await received.append(b"data")
    commit = asyncio.create_task(received.commit())
    assert await asyncio.to_thread(started.wait, 10)
    commit.cancel()
    with suppress(asyncio.CancelledError):
        await commit
    received.discard()
    release.set()
    assert await asyncio.to_thread(written.wait, 10)
    for _ in range(100):
        if not os.listdir(tmp_path):
            break
        await asyncio.sleep(0.05)
    assert os.listdir(tmp_path) == []


async def test_download_to_stalled_reader_is_complete(client: TestClient, user: User,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # sendfile(2) gives up on a reader that stops reading; the loop then sends the rest.
    monkeypatch.setattr(storage, "_SEND_STALL_MS", 1)
    sends: list[tuple[int, int]] = []
    send_file = storage._send_file

    def recorded(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
        sent = send_file(sock_fd, file_fd, offset, count)
        sends.append((sent, count))
        return sent

    monkeypatch.setattr(storage, "_send_file", recorded)
    content = os.urandom(32 * 1024 * 1024)
    file_id = (await upload(client, user, content, "big.bin", "application/octet-stream"))["id"]
    resp = await client.get(f"/files/{file_id}", headers=user.headers)
    await asyncio.sleep(0.2)
    assert await resp.read() == content
    assert len(sends) == 1 and sends[0][0] < sends[0][1]


async def test_upload_hostile_file_name_stays_in_files_dir(client: TestClient, user: User, tmp_path: Path) -> None:
    name = "../../" + "a" * 300 + "/../../etc/passwd.sh"
    file_id = (await upload(client, user, b"#!/bin/sh", name))["id"]
    meta = await (await client.get(f"/files/{file_id}/metadata", headers=user.headers)).json()
    assert meta["original_name"] == name and meta["internal_name"] == f"{file_id}.sh"
    assert files_on_disk(client) == [f"{file_id}.sh"]
    assert not any(p.name.startswith("passwd") for p in tmp_path.rglob("*"))
    for odd, suffix in (("x.tar.gz", ".gz"), (".bashrc", ""), ("a.b c", ""), ("x.\u00e9", ""), ("..", ""),
                        ('q"uote;d.md', ".md")):
        file_id = (await upload(client, user, b"1", odd.replace('"', '\\"')))["id"]
        meta = await (await client.get(f"/files/{file_id}/metadata", headers=user.headers)).json()
        assert (meta["original_name"], meta["internal_name"]) == (odd, f"{file_id}{suffix}")


async def test_upload_file_name_with_nul_is_refused(client: TestClient, user: User, db) -> None:
    # A raw NUL is not even a valid header; an RFC 2231 encoded one gets past the parser.
    body = await upload(client, user, b"data", "../" + "a" * 300 + "\x00b.txt", status=400)
    assert body == {"detail": "There was an error parsing the body"}
    content, headers = multipart([("file", None, b"data", "text/plain")])
    content = content.replace(b'name="file"', b"name=\"file\"; filename*=utf-8''..%2Fa%00b.txt")
    resp = await client.post("/files", data=content, headers={**headers, **user.headers})
    assert resp.status == 422
    [err] = (await resp.json())["detail"]
    assert err["type"] == "value_error" and err["loc"] == ["body", "file"] and err["input"] == "../a\x00b.txt"
    assert files_on_disk(client) == [] and await db.fetchval("SELECT count(*) FROM files") == 0


async def test_upload_malformed_multipart_is_400(client: TestClient, user: User) -> None:
    content, headers = multipart([("file", "a.txt", b"data", "text/plain")])
    resp = await client.post("/files", data=content[:-20], headers={**headers, **user.headers})
    assert resp.status == 400
    resp = await client.post("/files", data=content, headers={**user.headers, "Content-Type": "multipart/form-data"})
    assert resp.status == 400
    assert files_on_disk(client) == []


async def test_upload_form_field_errors_in_order(client: TestClient, user: User, db) -> None:
    body, headers = multipart([("request_id", None, b"nope", None), ("session_id", None, b"", None),
                               ("other", "x.txt", b"data", "text/plain")])
    resp = await client.post("/files", data=body, headers={**headers, **user.headers})
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert [(e["type"], e["loc"], e["input"]) for e in detail] == [
        ("missing", ["body", "file"], None), ("uuid_parsing", ["body", "request_id"], "nope"),
        ("uuid_parsing", ["body", "session_id"], "")]
    assert detail[2]["ctx"] == {"error": "invalid length: expected length 32 for simple format, found 0"}
    resp = await client.post("/files", json={"file": "x"}, headers=user.headers)
    assert resp.status == 422
    await upload(client, user, extra=[("request_id", None, b"bad", None)], status=422)
    assert files_on_disk(client) == [] and await db.fetchval("SELECT count(*) FROM files") == 0


async def test_upload_file_by_agent_with_ids_is_from_agent(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user)
    agent_user = User({"id": user.id, "username": "agent"}, agent["jwt"])
    request_id, session_id = uuid.uuid4(), uuid.uuid4()
    extra = [("request_id", None, str(request_id).encode(), None), ("session_id", None, session_id.hex.encode(), None)]
    file_id = (await upload(client, agent_user, b"out", "result.json", "application/json", extra=extra))["id"]
    meta = await (await client.get(f"/files/{file_id}/metadata", headers=user.headers)).json()
    assert meta["from_agent"] is True and meta["creator_id"] == user.id
    assert (meta["request_id"], meta["session_id"]) == (str(request_id), str(session_id))
    key = client.app[SETTINGS].master_be_api_key
    resp = await client.get("/files", params={"session_id": str(session_id), "user_id": user.id},
                            headers={"X-API-KEY": key})
    assert resp.status == 200
    assert await resp.json() == [{"file_id": file_id, "session_id": str(session_id), "request_id": str(request_id)}]
    resp = await client.get("/files", params={"session_id": str(session_id)}, headers=user.headers)
    assert len(await resp.json()) == 1
    resp = await client.get("/files", params={"session_id": str(session_id), "user_id": user.id},
                            headers={"X-API-KEY": "wrong"})
    assert resp.status == 401


async def test_file_of_other_user_is_missing(client: TestClient, user: User, other_user: User) -> None:
    file_id = (await upload(client, user))["id"]
    for path in (f"/files/{file_id}", f"/files/{file_id}/metadata"):
        resp = await client.get(path, headers=other_user.headers)
        assert resp.status == 400
        assert await resp.json() == {"detail": f"File with id {file_id} does not exist"}
    resp = await client.get("/files", params={"session_id": str(uuid.uuid4())}, headers=other_user.headers)
    assert await resp.json() == []
    resp = await client.get("/files/None", headers=user.headers)
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["loc"] == ["path", "file_id"]


async def test_download_file_missing_on_disk_is_500(client: TestClient, user: User) -> None:
    file_id = (await upload(client, user, filename="gone.txt"))["id"]
    (client.app[SETTINGS].files_dir / f"{file_id}.txt").unlink()
    resp = await client.get(f"/files/{file_id}", headers=user.headers)
    assert resp.status == 500
    assert await resp.json() == {"detail": f"Metadata of file {file_id} exists, but file was not found"}


async def test_list_user_files_newest_first(client: TestClient, user: User, other_user: User) -> None:
    ids = [(await upload(client, user, filename=f"{i}.txt"))["id"] for i in range(3)]
    await upload(client, other_user)
    resp = await client.get("/user/files/metadata", headers=user.headers)
    body = await resp.json()
    assert [f["id"] for f in body] == ids[::-1] and len(body[0]) == 9
    resp = await client.get("/user/files/metadata", params={"limit": "1", "offset": "1"}, headers=user.headers)
    assert [f["id"] for f in await resp.json()] == [ids[1]]


async def test_upload_failing_after_write_leaves_nothing(client: TestClient, user: User, db,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise asyncpg.PostgresError("boom")

    monkeypatch.setattr(queries, "create_file", broken)
    body = await upload(client, user, status=500)
    assert body == {"detail": "Failed to save file"}
    assert files_on_disk(client) == []


async def test_upload_to_unwritable_dir_is_500(settings: Settings, aiohttp_client: Any, password_hash: str,
                                               tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    client = await aiohttp_client(create_app(replace(settings, files_dir=blocker / "files")))
    user = await make_user(client, password_hash)
    assert await upload(client, user, status=500) == {"detail": "Failed to save file"}
