"""Registration, login, token validation (rest-api #1-#3) against the real database."""
from __future__ import annotations

import time

import jwt
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import PASSWORD, User, login, register_user


async def test_register_user_returns_no_password_hash(client: TestClient, db) -> None:
    resp = await client.post("/api/register", json={"username": "alice", "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"id", "username", "created_at", "updated_at"}
    assert body["username"] == "alice"
    assert "+" not in body["created_at"] and not body["created_at"].endswith("Z")
    stored = await db.fetchrow("SELECT password FROM users WHERE username = 'alice'")
    assert stored["password"].startswith("$2b$12$")
    assert await db.fetchval("SELECT count(*) FROM userprofiles p JOIN users u ON u.id = p.user_id WHERE u.username='alice'") == 1


async def test_register_user_twice_is_400(client: TestClient) -> None:
    await register_user(client, "bob")
    resp = await client.post("/api/register", json={"username": "bob", "password": PASSWORD})
    assert resp.status == 400
    assert await resp.json() == {"detail": "User 'bob' already exists"}


async def test_register_user_password_rules_in_order(client: TestClient, db) -> None:
    cases = {
        "Ab1!": "Password must be longer than 8 symbols",
        "Abcdefg12": "Password must contain a special character",
        "abcdefg1!": "Password must contain an uppercase character",
        "ABCDEFG1!": "Password must contain an lowercase character",
        "Abcdefgh!": "Password must contain an numeric character",
    }
    for password, message in cases.items():
        resp = await client.post("/api/register", json={"username": "carol", "password": password})
        assert resp.status == 422
        assert await resp.json() == {"detail": [{
            "type": "value_error", "loc": ["body", "password"], "msg": f"Value error, {message}",
            "input": password, "ctx": {"error": {}}}]}
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_register_user_empty_username_is_422(client: TestClient) -> None:
    resp = await client.post("/api/register", json={"username": "", "password": PASSWORD})
    assert resp.status == 422
    [err] = (await resp.json())["detail"]
    assert err["type"] == "string_too_short" and err["ctx"] == {"min_length": 1}


async def test_register_user_missing_fields_report_whole_body(client: TestClient) -> None:
    resp = await client.post("/api/register", json={"name": "x"})
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "missing", "loc": ["body", "password"], "msg": "Field required", "input": {"name": "x"}},
        {"type": "missing", "loc": ["body", "username"], "msg": "Field required", "input": {"name": "x"}},
    ]}


async def test_register_user_without_body_is_422(client: TestClient) -> None:
    resp = await client.post("/api/register")
    assert resp.status == 422
    assert await resp.json() == {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]}


async def test_register_user_malformed_json_is_422(client: TestClient) -> None:
    resp = await client.post("/api/register", data='{"username": "x", ', headers={"Content-Type": "application/json"})
    assert resp.status == 422
    [err] = (await resp.json())["detail"]
    assert err["type"] == "json_invalid" and err["loc"] == ["body", 18] and err["input"] == {}
    assert err["ctx"] == {"error": "Expecting property name enclosed in double quotes"}


async def test_register_user_wrong_content_type_and_non_object(client: TestClient, db) -> None:
    resp = await client.post("/api/register", data="username=x", headers={"Content-Type": "text/plain"})
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["type"] == "model_attributes_type"
    resp = await client.post("/api/register", json=["x"])
    assert resp.status == 422
    assert (await resp.json())["detail"] == [{"type": "model_attributes_type", "loc": ["body"],
                                              "msg": "Input should be a valid dictionary or object to extract fields from",
                                              "input": ["x"]}]
    resp = await client.post("/api/register", json={"username": 5, "password": None})
    assert resp.status == 422
    assert [e["type"] for e in (await resp.json())["detail"]] == ["string_type", "string_type"]
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_register_user_oversized_body_is_413(client: TestClient, db) -> None:
    resp = await client.post("/api/register", json={"username": "big", "password": PASSWORD, "pad": "x" * 10_000_000})
    assert resp.status == 413
    assert (await resp.json())["detail"]
    resp = await client.post("/api/register", json={"username": "y" * 300, "password": PASSWORD})
    assert resp.status == 422
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_register_user_sql_metacharacters_stored_verbatim(client: TestClient, db) -> None:
    name = "x'); DROP TABLE users; --\\%_"
    info = await register_user(client, name)
    assert info["username"] == name
    token = await login(client, name)
    assert token
    assert await db.fetchval("SELECT username FROM users") == name


async def test_login_user_issues_six_hour_token(client: TestClient) -> None:
    info = await register_user(client, "dave")
    resp = await client.post("/api/login/access-token",
                             data={"username": "dave", "password": PASSWORD, "grant_type": "password"})
    assert resp.status == 200
    body = await resp.json()
    assert body["refresh_token"] is None and body["token_type"] == "Bearer"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert set(claims) == {"sub", "exp"} and claims["sub"] == info["id"]
    assert abs(claims["exp"] - (time.time() + 6 * 3600)) < 60


async def test_login_user_bad_credentials_is_400(client: TestClient) -> None:
    await register_user(client, "erin")
    for username, password in (("erin", "Wr0ng!pass"), ("nobody", PASSWORD), ("ERIN", PASSWORD)):
        resp = await client.post("/api/login/access-token", data={"username": username, "password": password})
        assert resp.status == 400
        assert await resp.json() == {"detail": "Incorrect username or password"}


async def test_login_user_json_body_is_422(client: TestClient) -> None:
    resp = await client.post("/api/login/access-token", json={"username": "a", "password": "b"})
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "missing", "loc": ["body", "username"], "msg": "Field required", "input": None},
        {"type": "missing", "loc": ["body", "password"], "msg": "Field required", "input": None},
    ]}


async def test_login_user_wrong_grant_type_is_422(client: TestClient) -> None:
    resp = await client.post("/api/login/access-token", data={"username": "a", "password": "b", "grant_type": "code"})
    assert resp.status == 422
    [err] = (await resp.json())["detail"]
    assert err == {"type": "string_pattern_mismatch", "loc": ["body", "grant_type"],
                   "msg": "String should match pattern '^password$'", "input": "code", "ctx": {"pattern": "^password$"}}


async def test_register_user_password_over_72_bytes_is_422(client: TestClient, db) -> None:
    # bcrypt would ignore everything after byte 72: such a password is refused, not truncated.
    for password in ("Aa1!" + "x" * 69, "Aa1!" + "é" * 35):
        resp = await client.post("/api/register", json={"username": "frank", "password": password})
        assert resp.status == 422, await resp.text()
        [err] = (await resp.json())["detail"]
        assert err["loc"] == ["body", "password"]
        assert err["msg"] == "Value error, Password must be at most 72 bytes long (UTF-8)"
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    await register_user(client, "frank", "Aa1!" + "x" * 68)  # exactly 72 bytes


async def test_login_user_existing_long_password_hash_keeps_working(client: TestClient, db) -> None:
    # A reference database may hold hashes of longer passwords; they log in as before.
    import bcrypt

    password = "Aa1!" + "x" * 80
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    await db.execute("INSERT INTO users (id, username, password) VALUES (gen_random_uuid(), 'frank', $1)", hashed)
    assert await login(client, "frank", password)
    assert await login(client, "frank", password[:72] + "different-tail")


@pytest.mark.parametrize(("taken", "spelling"), [("admin", "ａｄｍｉｎ"), ("adIV", "ad\u2163"), ("file", "\ufb01le")])
async def test_register_user_same_name_after_nfkc_is_400(client: TestClient, taken: str, spelling: str) -> None:
    await register_user(client, taken)
    resp = await client.post("/api/register", json={"username": spelling, "password": PASSWORD})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["detail"] == f"User '{taken}' already exists"


async def test_register_user_stores_nfkc_form_and_logs_in_with_any_spelling(client: TestClient, db) -> None:
    nfd = "A\u030angstr\u00f6m"  # Å decomposed, ö composed
    user = await register_user(client, nfd)
    assert user["username"] == "\u00c5ngstr\u00f6m"
    assert await db.fetchval("SELECT username FROM users") == "\u00c5ngstr\u00f6m"
    for spelling in (nfd, "\u00c5ngstr\u00f6m", "\u00c5ngstro\u0308m"):
        assert await login(client, spelling)
    resp = await client.post("/api/register", json={"username": "\u00c5ngstro\u0308m", "password": PASSWORD})
    assert resp.status == 400


@pytest.mark.parametrize("name", ["admin\u200b", "\u200dadmin", "ad\u00admin", "admin\u202e", "a\tb",
                                  "adm\u3164in", "admin\ufe0f", "a\u2028b", "\U000e0041admin"])
async def test_register_user_invisible_or_control_characters_is_422(client: TestClient, db, name: str) -> None:
    resp = await client.post("/api/register", json={"username": name, "password": PASSWORD})
    assert resp.status == 422, await resp.text()
    [err] = (await resp.json())["detail"]
    assert err["loc"] == ["body", "username"]
    assert err["msg"] == "Value error, Username must not contain invisible or control characters"
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_login_user_legacy_accounts_equal_after_nfkc_keep_working(client: TestClient, db,
                                                                        password_hash: str) -> None:
    # Rows written before migration 0005 (the trigger is bypassed the way a reference database
    # was filled): the migration's back-fill keeps the oldest, and each logs in by its spelling.
    await db.execute("ALTER TABLE users DISABLE TRIGGER users_username_key")
    try:
        for name, age in (("admin", "2 days"), ("ａｄｍｉｎ", "1 day")):
            await db.execute("INSERT INTO users (id, username, password, created_at) "
                             "VALUES (gen_random_uuid(), $1, $2, now() - $3::text::interval)", name, password_hash, age)
    finally:
        await db.execute("ALTER TABLE users ENABLE TRIGGER users_username_key")
    from pathlib import Path

    backfill = Path("migrations/0005_limits_and_usernames.sql").read_text()
    start = backfill.index("INSERT INTO username_keys")
    await db.execute(backfill[start:backfill.index(";", start) + 1])
    ids = {row["username"]: row["id"] for row in await db.fetch("SELECT id, username FROM users")}
    assert await db.fetchval("SELECT user_id FROM username_keys WHERE key = 'admin'") == ids["admin"]
    for name in ("admin", "ａｄｍｉｎ"):
        token = await login(client, name)
        resp = await client.post("/api/validate-token", json={"token": token})
        assert resp.status == 200
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["sub"] == str(ids[name])
    resp = await client.post("/api/register", json={"username": "ａdmin", "password": PASSWORD})
    assert resp.status == 400


async def test_validate_token(client: TestClient, user: User) -> None:
    resp = await client.post("/api/validate-token", json={"token": user.token})
    assert resp.status == 200
    assert await resp.json() == {"detail": "Token is valid"}
    for bad in ("garbage", user.token[:-2] + "xx", ""):
        resp = await client.post("/api/validate-token", json={"token": bad})
        assert resp.status == 400
        assert await resp.json() == {"detail": "Token is invalid or expired. Please log in again"}


async def test_validate_token_of_deleted_user_is_400(client: TestClient, user: User, db) -> None:
    await db.execute("DELETE FROM users WHERE id = $1", __import__("uuid").UUID(user.id))
    resp = await client.post("/api/validate-token", json={"token": user.token})
    assert resp.status == 400
