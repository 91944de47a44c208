"""Model providers and configurations (rest-api #18-#25), and the API-key encryption format."""
from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from genai_backend.auth import secrets
from genai_backend.config import SETTINGS
from genai_backend.schemas.llm import DEFAULT_PROMPT_STORED, DEFAULT_SYSTEM_PROMPT
from tests.conftest import User

PROVIDER = "/api/llm/model/provider"
CONFIG = "/api/llm/model/config"
CONFIGS = "/api/llm/model/configs"


async def create_provider(client: TestClient, user: User, name: str = "openai", api_key: str | None = "sk-test",
                          metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "api_key": api_key, "metadata": metadata or {}}
    resp = await client.post(PROVIDER, json=body, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def create_config(client: TestClient, user: User, name: str = "cfg1", provider: str = "openai",
                        **fields: Any) -> list[dict[str, Any]]:
    body = {"name": name, "model": "gpt-4o", "provider": provider, **fields}
    resp = await client.post(CONFIG, json=body, headers=user.headers)
    assert resp.status == 200, await resp.text()
    return list(await resp.json())


def reference_encrypt(plaintext: str, secret: str) -> str:
    """The reference's format, written independently of the code under test."""
    salt, nonce = b"s" * 16, b"n" * 16
    key = hashlib.scrypt(secret.encode(), salt=salt, n=16384, r=8, p=1, dklen=32)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    parts = (sealed[:-16], salt, nonce, sealed[-16:])
    return "*".join(base64.b64encode(p).decode() for p in parts)


async def test_decrypt_api_key_written_in_reference_format() -> None:
    token = reference_encrypt("sk-reference", "the-secret")
    assert await secrets.decrypt(token, "the-secret") == "sk-reference"
    with pytest.raises(secrets.InvalidCiphertext):
        await secrets.decrypt(token, "another-secret")
    for bad in ("sk-plain", "a*b*c", "a*b*c*d", token.replace("*", "*x", 1), token[:-4] + "AAA="):
        with pytest.raises(secrets.InvalidCiphertext):
            await secrets.decrypt(bad, "the-secret")


async def test_encrypt_api_key_round_trips_with_fresh_salt_and_nonce() -> None:
    first, second = secrets.encrypt_sync("sk-1", "k"), secrets.encrypt_sync("sk-1", "k")
    assert first != second
    ciphertext, salt, nonce, tag = (base64.b64decode(p) for p in first.split("*"))
    assert (len(ciphertext), len(salt), len(nonce), len(tag)) == (4, 16, 16, 16)
    assert secrets.decrypt_sync(first, "k") == "sk-1"


async def test_get_default_prompt(client: TestClient, user: User) -> None:
    resp = await client.get("/api/llm/model/prompt", params={"provider": "openai", "model": "x"}, headers=user.headers)
    assert resp.status == 200
    assert await resp.json() == {"system_prompt": DEFAULT_SYSTEM_PROMPT}
    assert DEFAULT_SYSTEM_PROMPT.endswith("\n") and "language of the user" in DEFAULT_SYSTEM_PROMPT
    resp = await client.get("/api/llm/model/prompt")
    assert resp.status == 401


async def test_create_provider_stores_key_encrypted(client: TestClient, user: User, db) -> None:
    body = await create_provider(client, user, metadata={"endpoint": "https://x"})
    assert set(body) == {"id", "api_key", "provider", "metadata", "created_at", "updated_at"}
    assert body["provider"] == "openai" and body["metadata"] == {"endpoint": "https://x"}
    stored = await db.fetchval("SELECT api_key FROM modelproviders WHERE id = $1", uuid.UUID(body["id"]))
    assert stored == body["api_key"] and "sk-test" not in stored and stored.count("*") == 3
    assert secrets.decrypt_sync(stored, client.app[SETTINGS].secret_key) == "sk-test"


async def test_create_provider_ollama_has_no_key(client: TestClient, user: User, db) -> None:
    body = await create_provider(client, user, name=" Ollama ", api_key="ignored", metadata={"base_url": "http://o"})
    assert "api_key" not in body and body["provider"] == " Ollama "
    assert await db.fetchval("SELECT api_key FROM modelproviders") is None


async def test_create_provider_without_key_is_422(client: TestClient, user: User, db) -> None:
    for body in ({"name": "openai"}, {"name": "openai", "api_key": ""}, {"name": "openai", "api_key": None}):
        resp = await client.post(PROVIDER, json=body, headers=user.headers)
        assert resp.status == 422
        assert await resp.json() == {"detail": [{
            "type": "value_error", "loc": ["body"], "msg": "Value error, 'api_key' must be specified for this provider",
            "input": body, "ctx": {"error": {}}}]}
    assert await db.fetchval("SELECT count(*) FROM modelproviders") == 0


async def test_create_provider_twice_is_400(client: TestClient, user: User, other_user: User) -> None:
    await create_provider(client, user)
    resp = await client.post(PROVIDER, json={"name": "openai", "api_key": "k"}, headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Creator_id, name - '{user.id}, openai' already exists"}
    await create_provider(client, other_user)


async def test_patch_provider_keeps_opaque_key_and_encrypts_new_one(client: TestClient, user: User, db) -> None:
    created = await create_provider(client, user)
    secret = client.app[SETTINGS].secret_key
    resp = await client.patch("/api/llm/model/providers/openai", headers=user.headers,
                              json={"api_key": created["api_key"], "metadata": {"a": "b"}})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["api_key"] == created["api_key"] and body["metadata"] == {"a": "b"}
    assert body["updated_at"] > body["created_at"]
    resp = await client.patch("/api/llm/model/providers/openai", headers=user.headers, json={"api_key": "sk-new"})
    body = await resp.json()
    assert body["metadata"] == {} and secrets.decrypt_sync(body["api_key"], secret) == "sk-new"


async def test_patch_provider_with_other_users_ciphertext_encrypts_it_as_new_key(client: TestClient, user: User,
                                                                              other_user: User, db) -> None:
    # Another user's ciphertext decrypts under the same SECRET_KEY; stored as "unchanged" it would
    # send that user's plain key to the master agent on this user's next chat.
    theirs = await create_provider(client, other_user)
    mine = await create_provider(client, user)
    secret = client.app[SETTINGS].secret_key
    resp = await client.patch("/api/llm/model/providers/openai", headers=user.headers,
                              json={"api_key": theirs["api_key"]})
    assert resp.status == 200, await resp.text()
    stored = await db.fetchval("SELECT api_key FROM modelproviders WHERE creator_id = $1", uuid.UUID(user.id))
    assert stored not in (theirs["api_key"], mine["api_key"])
    assert secrets.decrypt_sync(stored, secret) == theirs["api_key"]  # the text given, as a new key
    # The caller's own previous ciphertext is no longer current either: also a new key.
    resp = await client.patch("/api/llm/model/providers/openai", headers=user.headers, json={"api_key": mine["api_key"]})
    assert secrets.decrypt_sync((await resp.json())["api_key"], secret) == mine["api_key"]


async def test_patch_provider_errors(client: TestClient, user: User, other_user: User) -> None:
    await create_provider(client, user)
    resp = await client.patch("/api/llm/model/providers/openai", headers=other_user.headers, json={"api_key": "x"})
    assert resp.status == 400
    assert await resp.json() == {"detail": "Provider named 'openai' does not exist"}
    for body in ({"api_key": ""}, {"metadata": {}}):
        resp = await client.patch("/api/llm/model/providers/openai", headers=user.headers, json=body)
        assert resp.status == 422
        [err] = (await resp.json())["detail"]
        assert err["loc"] == ["body"] and err["input"] == body and err["type"] == "value_error"


async def test_patch_provider_ollama_nulls_key(client: TestClient, user: User) -> None:
    await create_provider(client, user, name="azure openai")
    await create_provider(client, user, name="ollama")
    resp = await client.patch("/api/llm/model/providers/ollama", headers=user.headers,
                              json={"api_key": "x", "metadata": {"base_url": "http://h"}})
    body = await resp.json()
    assert body["api_key"] is None and body["metadata"] == {"base_url": "http://h"}
    resp = await client.patch("/api/llm/model/providers/azure%20openai", headers=user.headers, json={"api_key": "k2"})
    assert resp.status == 200 and (await resp.json())["provider"] == "azure openai"


async def test_create_config_returns_provider_with_configs_newest_first(client: TestClient, user: User) -> None:
    await create_provider(client, user, metadata={"endpoint": "e"})
    await create_config(client, user, "cfg1", temperature=0.5, system_prompt="  sys  ",
                        credentials={"a": " b ", "n": 1, "x": None}, max_last_messages=3)
    [provider] = await create_config(client, user, "  cfg2  ")
    assert set(provider) == {"api_key", "provider", "configs", "metadata"}
    assert provider["metadata"] == {"endpoint": "e"}
    newest, oldest = provider["configs"]
    assert newest["name"] == "cfg2" and newest["system_prompt"] == DEFAULT_PROMPT_STORED
    assert (newest["temperature"], newest["max_last_messages"], newest["user_prompt"], newest["credentials"]) == (
        0.7, 5, "", {})
    assert oldest == {"id": oldest["id"], "name": "cfg1", "model": "gpt-4o", "system_prompt": "sys", "temperature": 0.5,
                      "credentials": {"a": "b"}, "user_prompt": "", "max_last_messages": 3}


async def test_create_config_errors(client: TestClient, user: User, other_user: User, db) -> None:
    await create_provider(client, user)
    resp = await client.post(CONFIG, json={"name": "c", "model": "m", "provider": "nope"}, headers=user.headers)
    assert resp.status == 400 and await resp.json() == {"detail": "Provider named nope does not exist"}
    await create_config(client, user, "c")
    resp = await client.post(CONFIG, json={"name": "c", "model": "m", "provider": "openai"}, headers=user.headers)
    assert resp.status == 400 and await resp.json() == {"detail": "Config named 'c' already exists"}
    # Names are unique per user only (D17).
    await create_provider(client, other_user)
    await create_config(client, other_user, "c")
    body = {"name": "d", "model": "m", "provider": "openai", "max_last_messages": 21, "temperature": None,
            "extra": 1}
    resp = await client.post(CONFIG, json=body, headers=user.headers)
    assert resp.status == 422
    assert [(e["type"], e["loc"]) for e in (await resp.json())["detail"]] == [
        ("float_type", ["body", "temperature"]), ("value_error", ["body", "max_last_messages"]),
        ("extra_forbidden", ["body", "extra"])]
    assert (await resp.json())["detail"][1]["msg"] == (
        "Value error, 'max_last_messages' value must be 0 ≤ max_last_messages ≤ 20")
    assert await db.fetchval("SELECT count(*) FROM modelconfigs") == 2


async def test_list_configs_providers_newest_first_configs_oldest_first(client: TestClient, user: User,
                                                                        other_user: User) -> None:
    await create_provider(client, user, "openai")
    await create_provider(client, user, "ollama", None)
    await create_config(client, user, "a")
    await create_config(client, user, "b")
    await create_provider(client, other_user, "openai")
    resp = await client.get(CONFIGS, headers=user.headers)
    body = await resp.json()
    assert [p["provider"] for p in body] == ["ollama", "openai"]
    assert body[0]["configs"] == [] and body[0]["api_key"] is None
    assert [c["name"] for c in body[1]["configs"]] == ["a", "b"]
    resp = await client.get(CONFIGS, params={"offset": "1", "limit": "1"}, headers=user.headers)
    assert [p["provider"] for p in await resp.json()] == ["openai"]
    resp = await client.get(CONFIGS, params={"limit": "-1"}, headers=user.headers)
    assert resp.status == 422


async def test_get_config_of_other_user_is_400(client: TestClient, user: User, other_user: User) -> None:
    await create_provider(client, user)
    [provider] = await create_config(client, user, "a")
    config_id = provider["configs"][0]["id"]
    resp = await client.get(f"{CONFIG}/{config_id}", headers=user.headers)
    assert resp.status == 200
    assert await resp.json() == provider
    resp = await client.get(f"{CONFIG}/{config_id}", headers=other_user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Config with id '{config_id}' was not found"}
    resp = await client.get(f"{CONFIG}/None", headers=user.headers)
    assert resp.status == 422


async def test_patch_config_changes_only_fields_sent(client: TestClient, user: User) -> None:
    await create_provider(client, user)
    [provider] = await create_config(client, user, "a", system_prompt="sys", user_prompt="up",
                                     credentials={"k": "v"}, max_last_messages=2)
    config_id = provider["configs"][0]["id"]
    resp = await client.patch(f"{CONFIG}/{config_id}", json={"temperature": 1.5, "name": " b "}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"id": config_id, "name": "b", "model": "gpt-4o", "system_prompt": "sys",
                                 "temperature": 1.5, "credentials": {"k": "v"}, "user_prompt": "up",
                                 "max_last_messages": 2}
    resp = await client.patch(f"{CONFIG}/{config_id}", json={"provider": "x", "system_prompt": None},
                              headers=user.headers)
    assert resp.status == 422
    assert [e["type"] for e in (await resp.json())["detail"]] == ["string_type", "extra_forbidden"]
    resp = await client.patch(f"{CONFIG}/{config_id}", json={"system_prompt": ""}, headers=user.headers)
    assert (await resp.json())["system_prompt"] == DEFAULT_PROMPT_STORED


async def test_patch_and_delete_config_unknown_is_400(client: TestClient, user: User, other_user: User) -> None:
    await create_provider(client, user)
    [provider] = await create_config(client, user, "a")
    await create_config(client, user, "b")
    config_id = provider["configs"][0]["id"]
    resp = await client.patch(f"{CONFIG}/{config_id}", json={"name": "b"}, headers=user.headers)
    assert resp.status == 400 and await resp.json() == {"detail": "Config named 'b' already exists"}
    for method in (client.patch, client.delete):
        resp = await method(f"{CONFIG}/{config_id}", headers=other_user.headers, json={})
        assert resp.status == 400
        assert await resp.json() == {"detail": f"Config with id '{config_id}' was not found"}
    resp = await client.delete(f"{CONFIG}/{config_id}", headers=user.headers)
    assert resp.status == 204 and await resp.read() == b""
    resp = await client.delete(f"{CONFIG}/{config_id}", headers=user.headers)
    assert resp.status == 400


async def test_decrypt_is_off_the_loop_and_memoised(client: TestClient, user: User) -> None:
    secret = client.app[SETTINGS].secret_key
    token = secrets.encrypt_sync("sk-memo", secret)
    started = time.perf_counter()
    assert await secrets.decrypt(token, secret) == "sk-memo"
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert await secrets.decrypt(token, secret) == "sk-memo"
    again = time.perf_counter() - started
    assert again < first / 10
