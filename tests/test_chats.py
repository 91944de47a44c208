"""Conversations and history (rest-api #26-#30), including the master agent's X-API-KEY variant."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from yarl import URL

from genai_backend.config import SETTINGS
from tests.conftest import User


async def create_chat(client: TestClient, user: User, title: str = "hello",
                      session_id: uuid.UUID | None = None) -> dict[str, Any]:
    session_id = session_id or uuid.uuid4()
    resp = await client.post("/api/chats", json={"title": title, "session_id": str(session_id)}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def add_messages(db, session_id: str, count: int) -> None:
    """Messages with distinct, increasing timestamps (one statement each, like the WebSocket)."""
    for index in range(count):
        sender = "user" if index % 2 == 0 else "master_agent"
        await db.execute("INSERT INTO chatmessages (id, request_id, sender_type, content, conversation_id) "
                         "VALUES ($1, $2, $3, $4, $5)", uuid.uuid4(), uuid.uuid4(), sender, f"m{index}",
                         uuid.UUID(session_id))


async def test_create_chat_and_list_newest_first(client: TestClient, user: User, other_user: User) -> None:
    first = await create_chat(client, user, "first")
    assert set(first) == {"session_id", "title", "created_at", "updated_at", "creator_id"}
    assert first["creator_id"] == user.id
    second = await create_chat(client, user, "x" * 20)
    await create_chat(client, other_user, "theirs")
    resp = await client.get("/api/chats", headers=user.headers)
    body = await resp.json()
    assert [c["session_id"] for c in body["chats"]] == [second["session_id"], first["session_id"]]
    assert set(body["chats"][0]) == {"session_id", "title", "created_at", "updated_at"}
    resp = await client.get("/api/chats", params={"limit": "1", "offset": "1"}, headers=user.headers)
    assert [c["title"] for c in (await resp.json())["chats"]] == ["first"]


async def test_create_chat_title_rules_and_duplicate(client: TestClient, user: User, other_user: User) -> None:
    session_id = uuid.uuid4()
    for title, message in (("", "Chat title must not be empty"), ("x" * 21, "Chat title must not be longer than 20 symbols")):
        resp = await client.post("/api/chats", json={"title": title, "session_id": str(session_id)}, headers=user.headers)
        assert resp.status == 422
        assert (await resp.json())["detail"] == [{"type": "value_error", "loc": ["body", "title"],
                                                 "msg": f"Value error, {message}", "input": title,
                                                 "ctx": {"error": {}}}]
    resp = await client.post("/api/chats", json={"session_id": str(session_id)}, headers=user.headers)
    assert resp.status == 422 and (await resp.json())["detail"][0]["loc"] == ["body", "title"]
    await create_chat(client, user, session_id=session_id)
    resp = await client.post("/api/chats", json={"title": "t", "session_id": str(session_id)},
                             headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Chat with Session_id - '{session_id}' already exists"}


async def test_get_chat_pages_newest_first(client: TestClient, user: User, db) -> None:
    chat = await create_chat(client, user)
    await add_messages(db, chat["session_id"], 4)
    resp = await client.get("/api/chat", params={"session_id": chat["session_id"], "per_page": "1", "page": "2"},
                            headers=user.headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["total_count"] == 4 and [i["content"] for i in body["items"]] == ["m2"]
    assert set(body["items"][0]) == {"sender_type", "content", "request_id", "created_at"}
    assert body["items"][0]["sender_type"] == "user"
    next_url, previous_url = URL(body["next_page"]), URL(body["previous_page"])
    assert next_url.is_absolute() and list(next_url.query.items()) == [
        ("session_id", chat["session_id"]), ("per_page", "1"), ("page", "3")]
    assert previous_url.query["page"] == "1"
    resp = await client.get("/api/chat", params={"session_id": chat["session_id"]}, headers=user.headers)
    body = await resp.json()
    assert [i["content"] for i in body["items"]] == ["m3", "m2", "m1", "m0"]
    assert body["next_page"] is None and body["previous_page"] is None


async def test_get_chat_page_edges(client: TestClient, user: User, db) -> None:
    chat = await create_chat(client, user)
    await add_messages(db, chat["session_id"], 3)
    sid = chat["session_id"]

    async def page(**params: str) -> dict[str, Any]:
        resp = await client.get("/api/chat", params={"session_id": sid, **params}, headers=user.headers)
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())

    empty = await page(per_page="0")
    assert empty == {"total_count": 3, "next_page": None, "previous_page": None, "items": []}
    last = await page(per_page="2", page="2")
    assert [i["content"] for i in last["items"]] == ["m0"] and last["next_page"] is None
    beyond = await page(per_page="2", page="3")
    assert beyond["items"] == [] and URL(beyond["previous_page"]).query["page"] == "2"
    assert (await page(per_page="2", page="4"))["previous_page"] is None
    resp = await client.get("/api/chat", params={"session_id": sid, "page": "0"}, headers=user.headers)
    assert resp.status == 422
    assert (await resp.json())["detail"] == [{"type": "greater_than_equal", "loc": ["query", "page"],
                                             "msg": "Input should be greater than or equal to 1", "input": "0",
                                             "ctx": {"ge": 1}}]
    resp = await client.get("/api/chat", headers=user.headers)
    assert resp.status == 422 and (await resp.json())["detail"][0]["loc"] == ["query", "session_id"]


async def test_get_chat_of_other_user_is_empty(client: TestClient, user: User, other_user: User, db) -> None:
    chat = await create_chat(client, user)
    await add_messages(db, chat["session_id"], 2)
    for who, sid in ((other_user, chat["session_id"]), (user, str(uuid.uuid4()))):
        resp = await client.get("/api/chat", params={"session_id": sid}, headers=who.headers)
        assert resp.status == 200
        assert await resp.json() == {"total_count": 0, "next_page": None, "previous_page": None, "items": []}


async def test_get_chat_with_master_key(client: TestClient, user: User, other_user: User, db) -> None:
    chat = await create_chat(client, user)
    await add_messages(db, chat["session_id"], 2)
    key = client.app[SETTINGS].master_be_api_key
    params = {"session_id": chat["session_id"], "user_id": user.id, "per_page": "5"}
    resp = await client.get("/api/chat", params=params, headers={"X-API-KEY": key})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["total_count"] == 2
    resp = await client.get("/api/chat", params={**params, "user_id": other_user.id}, headers={"X-API-KEY": key})
    assert (await resp.json())["total_count"] == 0
    resp = await client.get("/api/chat", params=params, headers={"X-API-KEY": "wrong"})
    assert resp.status == 401
    assert await resp.json() == {"detail": "You must provide x-api-key header if user_id query parameter is provided."}
    resp = await client.get("/api/chat", params=params)
    assert resp.status == 401
    resp = await client.get("/api/chat", params=params, headers={**user.headers, "X-API-KEY": key})
    assert resp.status == 400
    resp = await client.get("/api/chat", params={"session_id": chat["session_id"]})
    assert resp.status == 400
    assert await resp.json() == {"detail": "You must provide either 'user_id' or your jwt token to continue."}


async def test_rename_chat(client: TestClient, user: User, other_user: User) -> None:
    chat = await create_chat(client, user)
    await asyncio.sleep(0.001)
    resp = await client.patch("/api/chat", params={"session_id": chat["session_id"]}, json={"title": "renamed"},
                              headers=user.headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["title"] == "renamed" and body["updated_at"] > body["created_at"] and body["creator_id"] == user.id
    resp = await client.patch("/api/chat", params={"session_id": chat["session_id"]}, json={"title": "x"},
                              headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Chat with session_id {chat['session_id']} does not exist"}
    resp = await client.patch("/api/chat", params={"session_id": chat["session_id"]}, json={"title": ""},
                              headers=user.headers)
    assert resp.status == 422


async def test_delete_chat_removes_messages(client: TestClient, user: User, other_user: User, db) -> None:
    chat = await create_chat(client, user)
    await add_messages(db, chat["session_id"], 2)
    resp = await client.delete("/api/chat", params={"session_id": chat["session_id"]}, headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Chat with session_id: '{chat['session_id']}' does not exist"}
    resp = await client.delete("/api/chat", params={"session_id": chat["session_id"]}, headers=user.headers)
    assert resp.status == 204
    assert await db.fetchval("SELECT count(*) FROM chatmessages") == 0
    resp = await client.delete("/api/chat", params={"session_id": chat["session_id"]}, headers=user.headers)
    assert resp.status == 400
