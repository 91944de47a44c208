"""The user-token guard: every failure mode of spec README §1 with its exact body and header."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import cast

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from genai_backend.auth.middleware import KNOWN_USERS, KnownUsers
from genai_backend.config import SETTINGS
from tests.conftest import User

NOT_AUTH = {"detail": "Not authenticated"}
INVALID = {"detail": "Token is not valid or expired. Please log in again"}


async def _get(client: TestClient, user: User, headers: dict[str, str]):
    return await client.get(f"/api/profiles/{user.id}", headers=headers)


async def test_missing_or_misspelled_bearer_is_401(client: TestClient, user: User) -> None:
    for headers in ({}, {"Authorization": ""}, {"Authorization": f"Basic {user.token}"},
                    {"Authorization": f"Beare {user.token}"}, {"Authorization": user.token}):
        resp = await _get(client, user, headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert await resp.json() == NOT_AUTH


async def test_bearer_scheme_is_case_insensitive(client: TestClient, user: User) -> None:
    resp = await _get(client, user, {"Authorization": f"bEaReR {user.token}"})
    assert resp.status == 200


async def test_bad_tokens_are_401(client: TestClient, user: User) -> None:
    secret = client.app[SETTINGS].secret_key
    expired = jwt.encode({"sub": user.id, "exp": int(time.time()) - 10}, secret, algorithm="HS256")
    foreign = jwt.encode({"sub": user.id, "exp": int(time.time()) + 100}, "another-key-that-is-long-enough-for-hs256", algorithm="HS256")
    unknown = jwt.encode({"sub": str(uuid.uuid4()), "exp": int(time.time()) + 100}, secret, algorithm="HS256")
    no_exp = jwt.encode({"sub": user.id}, secret, algorithm="HS256")
    not_uuid = jwt.encode({"sub": "x", "exp": int(time.time()) + 100}, secret, algorithm="HS256")
    none_alg = jwt.encode({"sub": user.id, "exp": int(time.time()) + 100}, None, algorithm="none")
    agent = jwt.encode({"sub": str(uuid.uuid4()), "exp": 253402300799, "user_id": user.id}, secret, algorithm="HS256")
    for token in (expired, foreign, unknown, no_exp, not_uuid, none_alg, agent, "garbage", ""):
        resp = await _get(client, user, {"Authorization": f"Bearer {token}"})
        assert resp.status == 401, token
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert await resp.json() == INVALID


async def test_token_of_deleted_user_is_401(client: TestClient, user: User, db) -> None:
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user.id))
    resp = await _get(client, user, user.headers)
    assert resp.status == 401
    assert await resp.json() == INVALID


async def test_a_user_deleted_after_a_request_is_refused_once_the_check_expires(
        client: TestClient, user: User, db) -> None:
    known = client.app[KNOWN_USERS]
    known.ttl = 0.2
    assert (await _get(client, user, user.headers)).status == 200
    await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user.id))
    await asyncio.sleep(0.25)
    for _ in range(2):
        resp = await _get(client, user, user.headers)
        assert resp.status == 401
        assert await resp.json() == INVALID


async def test_known_users_stay_bounded(client: TestClient, user: User, other_user: User) -> None:
    known = client.app[KNOWN_USERS]
    known.max_size = 1
    for _ in range(2):
        for who in (user, other_user):
            assert (await _get(client, who, who.headers)).status == 200
            assert len(known._seen) == 1


async def test_auth_runs_before_validation(client: TestClient) -> None:
    resp = await client.patch("/api/profiles/None", data="{bad json", headers={"Content-Type": "application/json"})
    assert resp.status == 401
    assert await resp.json() == NOT_AUTH


async def test_bcrypt_runs_in_idle_priority_processes_that_are_replaced_when_killed() -> None:
    import os
    import signal

    from genai_backend.auth import passwords

    hashed = await passwords.hash_password("s3cret!")
    pool = passwords._HASHERS.get()
    workers = list(pool._processes.values())  # type: ignore[union-attr]
    assert workers and all(w.pid != os.getpid() for w in workers)
    assert {os.sched_getscheduler(w.pid) for w in workers} == {os.SCHED_IDLE}
    os.kill(workers[0].pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    assert await passwords.verify_password("s3cret!", hashed)
    assert not await passwords.verify_password("wrong", hashed)
    assert passwords._HASHERS.get() is not pool


def _other_spellings(token: str) -> list[str]:
    """The same header, payload and signature bytes written another way (each decoded leniently before)."""
    head, payload, signature = token.split(".")
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 32 bytes = 43 characters: the last one carries 4 bits and 2 unused ones.
    same_bits = alphabet[alphabet.index(last) ^ 1]
    spellings = [token + "!!!", token + "====", token + "=", f"{head}.{payload}.{signature}==",
                 f"{head}.{payload}.{signature[:-1]}{same_bits}", f"{head}=.{payload}.{signature}",
                 f"{head}.{payload}.{signature[:10]}\n{signature[10:]}", f"{head}.{payload}.{signature[:10]}!{signature[10:]}"]
    if "-" in signature or "_" in signature:
        spellings.append(f"{head}.{payload}.{signature.replace('-', '+').replace('_', '/')}")
    return spellings


async def test_token_in_any_other_spelling_is_401(client: TestClient, user: User) -> None:
    from genai_backend.auth.tokens import issue_user_token

    secret = client.app[SETTINGS].secret_key
    # Tokens until one has a signature with `-` or `_`, so the +/ spelling is tried too.
    token = user.token
    for _ in range(30):
        if "-" in token.split(".")[2] or "_" in token.split(".")[2]:
            break
        await asyncio.sleep(1)  # exp moves every second, and the signature with it
        token = issue_user_token(uuid.UUID(user.id), secret)
    resp = await _get(client, user, {"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    for spelling in _other_spellings(token):
        if "\n" not in spelling:  # not a valid header at all
            resp = await _get(client, user, {"Authorization": f"Bearer {spelling}"})
            assert resp.status == 401, spelling
            assert await resp.json() == INVALID
        resp = await client.post("/api/validate-token", json={"token": spelling})
        assert resp.status == 400, spelling


def _non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent: only a route is chosen
            address: str = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_default_master_key_only_from_loopback(aiohttp_server, settings, user: User) -> None:
    import aiohttp
    import pytest

    from genai_backend.app import create_app
    from genai_backend.config import DEFAULT_MASTER_BE_API_KEY
    from tests.conftest import with_settings

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    url_path = f"/api/agents/active?agent_type=all&user_id={user.id}"
    for key, remote_ok in ((DEFAULT_MASTER_BE_API_KEY, False), ("own-key::master_server_be", True)):
        server = await aiohttp_server(create_app(with_settings(settings, master_be_api_key=key)), host="0.0.0.0")
        async with aiohttp.ClientSession() as http:
            for host, expected in (("127.0.0.1", 200), (address, 200 if remote_ok else 401)):
                async with http.get(f"http://{host}:{server.port}{url_path}", headers={"X-API-KEY": key}) as resp:
                    assert resp.status == expected, (key, host, await resp.text())
                    if expected == 401:
                        assert await resp.json() == {
                            "detail": "You must provide x-api-key header if user_id query parameter is provided."}
        await server.close()


async def test_concurrent_checks_of_an_expired_user_share_one_lookup(database_dsn: str, user: User) -> None:
    from types import SimpleNamespace

    from genai_backend.db import POOL, create_pool

    known = KnownUsers()
    pool = await create_pool(database_dsn, 1, 1)
    try:
        async with asyncio.timeout(20):
            request = cast(web.Request, SimpleNamespace(app={POOL: pool}))
            held = await pool.acquire()  # every lookup now waits at the pool's gate, where we count them
            checks = [asyncio.create_task(known.exists(request, uuid.UUID(user.id))) for _ in range(5)]
            for _ in range(10):
                await asyncio.sleep(0)
            assert pool.gate.waiting == 1
            checks[0].cancel()  # a caller giving up leaves the shared lookup to the others
            await pool.release(held)
            assert await asyncio.gather(*checks[1:]) == [True] * 4
            with pytest.raises(asyncio.CancelledError):
                await checks[0]
            assert await known.exists(request, uuid.UUID(user.id))  # cached now
    finally:
        pool.terminate()
