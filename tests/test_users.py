"""Registration, login, token validation (rest-api #1-#3) against the real database."""
from __future__ import annotations

import time

import jwt
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


async def test_login_user_long_password_uses_first_72_bytes(client: TestClient) -> None:
    password = "Aa1!" + "x" * 80
    await register_user(client, "frank", password)
    assert await login(client, "frank", password[:72] + "different-tail")


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
