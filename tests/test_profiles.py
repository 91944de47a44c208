"""Profiles: only your own (rest-api #4-#5, D12)."""
from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.conftest import User


async def test_get_profile_own(client: TestClient, user: User) -> None:
    resp = await client.get(f"/api/profiles/{user.id}", headers=user.headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user_id"] == user.id and body["first_name"] is None and body["last_name"] is None
    assert set(body) == {"id", "user_id", "first_name", "last_name"}


async def test_get_profile_of_other_user_is_400(client: TestClient, user: User, other_user: User) -> None:
    resp = await client.get(f"/api/profiles/{other_user.id}", headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Profile of user '{other_user.id}' does not exist"}


async def test_patch_profile_partial(client: TestClient, user: User) -> None:
    url = f"/api/profiles/{user.id}"
    resp = await client.patch(url, json={"first_name": "Ann", "max_last_messages": 5}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["first_name"] == "Ann"
    resp = await client.patch(url, json={"last_name": "Lee"}, headers=user.headers)
    body = await resp.json()
    assert (body["first_name"], body["last_name"]) == ("Ann", "Lee")


async def test_patch_profile_of_other_user_is_400(client: TestClient, user: User, other_user: User, db) -> None:
    resp = await client.patch(f"/api/profiles/{other_user.id}", json={"first_name": "X"}, headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Profile with of user with id '{other_user.id}' was not found"}
    assert await db.fetchval("SELECT count(*) FROM userprofiles WHERE first_name = 'X'") == 0


async def test_get_profile_non_uuid_is_422(client: TestClient, user: User) -> None:
    resp = await client.get("/api/profiles/None", headers=user.headers)
    assert resp.status == 422
    text = "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `N` at 1"
    assert await resp.json() == {"detail": [{"type": "uuid_parsing", "loc": ["path", "user_id"],
                                             "msg": f"Input should be a valid UUID, {text}", "input": "None",
                                             "ctx": {"error": text}}]}
