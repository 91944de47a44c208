"""Agents over REST (rest-api #6-#11): registration, listings, read, edit, delete, ownership."""
from __future__ import annotations

import re
import uuid

import jwt as pyjwt
from aiohttp.test_utils import TestClient

from genai_backend.config import SETTINGS
from tests.bus_fixtures import ECHO_SCHEMA, active_agent, register_agent, set_active
from tests.conftest import User

ALIAS = re.compile(r"^(.*)_[a-z]{6}$")
UUID_NONE_ERROR = ("invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], "
                   "found `N` at 1")


async def test_register_agent_returns_row_and_agent_jwt(client: TestClient, user: User, db) -> None:
    resp = await client.post("/api/agents/register", headers=user.headers, json={
        "name": "My Agent", "description": "d", "input_parameters": {}, "alias": "ignored", "is_active": True})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"name", "description", "id", "input_parameters", "created_at", "updated_at", "alias", "jwt"}
    assert body["name"] == "my_agent" and body["description"] == "d" and body["input_parameters"] == {}
    assert ALIAS.match(body["alias"]).group(1) == "my_agent"
    assert body["created_at"] == body["updated_at"] and "+" not in body["created_at"]
    claims = pyjwt.decode(body["jwt"], client.app[SETTINGS].secret_key, algorithms=["HS256"])
    assert claims == {"sub": body["id"], "exp": 253402300799, "user_id": user.id}
    row = await db.fetchrow("SELECT is_active, creator_id, jwt FROM agents WHERE id = $1", uuid.UUID(body["id"]))
    assert row["is_active"] is False and str(row["creator_id"]) == user.id and row["jwt"] == body["jwt"]


async def test_register_agent_with_chosen_id_in_any_uuid_form(client: TestClient, user: User) -> None:
    chosen = uuid.uuid4()
    for form in (chosen.hex.upper(), "{" + str(uuid.uuid4()) + "}"):
        body = await register_agent(client, user, id=form)
        assert body["id"] == str(uuid.UUID(form.strip("{}")))
    assert (await register_agent(client, user, id=str(uuid.uuid4()).upper()))["id"].islower()


async def test_register_agent_duplicate_id_is_400_for_any_owner(client: TestClient, user: User, other_user: User,
                                                               db) -> None:
    agent = await register_agent(client, user)
    for who in (user, other_user):
        resp = await client.post("/api/agents/register", headers=who.headers,
                                 json={"id": agent["id"], "name": "x", "description": "", "input_parameters": {}})
        assert resp.status == 400
        assert await resp.json() == {"detail": f"Agent with {agent['id']} already exists"}
    assert await db.fetchval("SELECT count(*) FROM agents") == 1


async def test_register_agent_bad_id_400_wins_over_422(client: TestClient, user: User, db) -> None:
    cases = {"abc": "Parameter 'id' must be a valid uuid", None: "Parameter 'id' must not be a null",
             5: "Parameter 'id' must be a valid uuid"}
    for bad, detail in cases.items():
        resp = await client.post("/api/agents/register", headers=user.headers,
                                 json={"id": bad, "name": "n" * 60, "input_parameters": None})
        assert resp.status == 400
        assert await resp.json() == {"detail": detail}
    assert await db.fetchval("SELECT count(*) FROM agents") == 0


async def test_register_agent_long_name_is_422(client: TestClient, user: User) -> None:
    ok = await register_agent(client, user, name="a" * 55)
    assert ok["name"] == "a" * 55
    resp = await client.post("/api/agents/register", headers=user.headers,
                             json={"name": "a" * 56, "description": "", "input_parameters": {}})
    assert resp.status == 422
    assert await resp.json() == {"detail": [{
        "type": "value_error", "loc": ["body", "name"],
        "msg": "Value error, Agent name must be less than 55 characters", "input": "a" * 56, "ctx": {"error": {}}}]}


async def test_register_agent_empty_name_allowed(client: TestClient, user: User) -> None:
    body = await register_agent(client, user, name="", description="", input_parameters={"additionalProp1": {}})
    assert body["name"] == "" and ALIAS.match(body["alias"]).group(1) == ""


async def test_register_agent_input_parameters_typing(client: TestClient, user: User, db) -> None:
    body = await register_agent(client, user, input_parameters='{"a": 1}')
    assert body["input_parameters"] == {"a": 1}
    for bad in ('"text"', "[1]", "nope"):
        resp = await client.post("/api/agents/register", headers=user.headers,
                                 json={"name": "x", "description": "", "input_parameters": bad})
        assert resp.status == 422
        [err] = (await resp.json())["detail"]
        assert err["msg"] == "Value error, input_parameters must be a JSON object"
    resp = await client.post("/api/agents/register", headers=user.headers,
                             json={"name": "x", "description": "", "input_parameters": None})
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "dict_type", "loc": ["body", "input_parameters", "dict[any,any]"],
         "msg": "Input should be a valid dictionary", "input": None},
        {"type": "string_type", "loc": ["body", "input_parameters", "str"],
         "msg": "Input should be a valid string", "input": None}]}
    assert await db.fetchval("SELECT count(*) FROM agents") == 1


async def test_register_agent_nul_and_oversized_inputs_are_4xx(client: TestClient, user: User, db) -> None:
    for body in ({"name": "a\x00", "description": "", "input_parameters": {}},
                 {"name": "a", "description": "\x00", "input_parameters": {}},
                 {"name": "a", "description": "", "input_parameters": {"k": "v\x00"}}):
        resp = await client.post("/api/agents/register", headers=user.headers, json=body)
        assert resp.status == 422, await resp.text()
    resp = await client.post("/api/agents/register", headers=user.headers,
                             json={"name": "a", "description": "x" * 2_000_000, "input_parameters": {}})
    assert resp.status == 413
    assert await db.fetchval("SELECT count(*) FROM agents") == 0


async def test_register_agent_needs_user_token(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user)
    resp = await client.post("/api/agents/register", json={"name": "a", "description": "", "input_parameters": {}},
                             headers={"Authorization": f"Bearer {agent['jwt']}"})
    assert resp.status == 401
    assert await resp.json() == {"detail": "Token is not valid or expired. Please log in again"}


async def test_list_agents_default_skips_unnamed_and_orders_oldest_first(client: TestClient, user: User,
                                                                        other_user: User) -> None:
    first = await register_agent(client, user, "first", "d1")
    await register_agent(client, user, "", "no name")
    await register_agent(client, user, "no_description", "")
    second = await register_agent(client, user, "second", "d2")
    await register_agent(client, other_user, "foreign", "d")
    for url in ("/api/agents/", "/api/agents"):
        resp = await client.get(url, headers=user.headers)
        assert resp.status == 200
        items = await resp.json()
        assert [i["agent_id"] for i in items] == [first["id"], second["id"]]
    assert items[0] == {
        "agent_id": first["id"], "agent_name": "first", "agent_description": "d1", "agent_schema": {},
        "created_at": first["created_at"], "updated_at": first["updated_at"], "is_active": False,
        "agent_jwt": first["jwt"], "agent_alias": first["alias"]}


async def test_list_agents_filters_newest_first_and_escapes_like(client: TestClient, user: User) -> None:
    a = await register_agent(client, user, "same", "100% sure")
    b = await register_agent(client, user, "same", "1000 sure")
    await register_agent(client, user, "", "")
    resp = await client.get("/api/agents/", params={"name": "same"}, headers=user.headers)
    assert [i["agent_id"] for i in await resp.json()] == [b["id"], a["id"]]
    resp = await client.get("/api/agents/", params={"name": ""}, headers=user.headers)
    assert len(await resp.json()) == 1
    resp = await client.get("/api/agents/", params={"description": "0% SURE"}, headers=user.headers)
    assert [i["agent_id"] for i in await resp.json()] == [a["id"]]
    resp = await client.get("/api/agents/", params={"description": "_"}, headers=user.headers)
    assert await resp.json() == []


async def test_list_agents_offset_limit(client: TestClient, user: User) -> None:
    ids = [(await register_agent(client, user, f"a{i}", "d"))["id"] for i in range(4)]
    for params, expected in (({"offset": "1", "limit": "2"}, ids[1:3]), ({"limit": "0"}, []),
                             ({"offset": "3"}, ids[3:]), ({"offset": "10"}, []),
                             ({"limit": "1000", "offset": str(10**30)}, []), ({"limit": "1000"}, ids)):
        resp = await client.get("/api/agents/", params=params, headers=user.headers)
        assert resp.status == 200, await resp.text()
        assert [i["agent_id"] for i in await resp.json()] == expected, params


async def test_list_agents_bad_pagination_is_422(client: TestClient, user: User) -> None:
    for name in ("offset", "limit"):
        for raw in ("0.1", "zero", ""):
            resp = await client.get("/api/agents/", params={name: raw}, headers=user.headers)
            assert resp.status == 422
            assert await resp.json() == {"detail": [{
                "type": "int_parsing", "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer", "input": raw}]}
        resp = await client.get("/api/agents/", params={name: "-1"}, headers=user.headers)
        assert await resp.json() == {"detail": [{
            "type": "greater_than_equal", "loc": ["query", name], "msg": "Input should be greater than or equal to 0",
            "input": "-1", "ctx": {"ge": 0}}]}


async def test_list_agents_with_agent_token_acts_as_owner_until_deleted(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user, "tok", "d")
    headers = {"Authorization": f"Bearer {agent['jwt']}"}
    resp = await client.get("/api/agents", headers=headers)
    assert resp.status == 200
    assert [i["agent_id"] for i in await resp.json()] == [agent["id"]]
    resp = await client.get(f"/api/agents/{agent['id']}", headers=headers)
    assert resp.status == 200
    resp = await client.delete(f"/api/agents/{agent['id']}", headers=user.headers)
    assert resp.status == 204
    resp = await client.get("/api/agents", headers=headers)
    assert resp.status == 401  # D25


async def test_get_agent_rewrites_function_name_to_agent_name(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user, "Flow A", "Desc", ECHO_SCHEMA)
    resp = await client.get(f"/api/agents/{agent['id']}", headers=user.headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["agent_schema"] == {**ECHO_SCHEMA, "function": {**ECHO_SCHEMA["function"], "name": "flow_a"}}
    assert body["agent_name"] == "flow_a" and body["agent_alias"] == agent["alias"]
    for schema in ({"function": {}}, {"function": "text"}, {"other": 1}):
        other = await register_agent(client, user, "x", "d", schema)
        resp = await client.get(f"/api/agents/{other['id']}", headers=user.headers)
        assert (await resp.json())["agent_schema"] == schema


async def test_get_agent_of_other_user_is_400_like_missing(client: TestClient, user: User, other_user: User) -> None:
    agent = await register_agent(client, other_user)
    for agent_id in (agent["id"], str(uuid.uuid4())):
        resp = await client.get(f"/api/agents/{agent_id}", headers=user.headers)
        assert resp.status == 400
        assert await resp.json() == {"detail": f"Agent '{agent_id}' does not exist"}


async def test_get_agent_not_a_uuid_is_422(client: TestClient, user: User) -> None:
    resp = await client.get("/api/agents/None", headers=user.headers)
    assert resp.status == 422
    assert await resp.json() == {"detail": [{
        "type": "uuid_parsing", "loc": ["path", "agent_id"], "msg": f"Input should be a valid UUID, {UUID_NONE_ERROR}",
        "input": "None", "ctx": {"error": UUID_NONE_ERROR}}]}


async def test_patch_agent_answers_alias_as_name(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user, "old", "d", ECHO_SCHEMA)
    resp = await client.patch(f"/api/agents/{agent['id']}", headers=user.headers,
                              json={"name": "New Name", "description": "nd", "input_parameters": ECHO_SCHEMA})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["agent_name"] == agent["alias"] and body["agent_alias"] == agent["alias"]
    assert body["agent_schema"] == ECHO_SCHEMA and body["agent_description"] == "nd"
    assert body["updated_at"] > body["created_at"] == agent["created_at"]
    resp = await client.get(f"/api/agents/{agent['id']}", headers=user.headers)
    got = await resp.json()
    assert got["agent_name"] == "new_name" and got["agent_alias"] == agent["alias"]
    assert got["agent_schema"]["function"]["name"] == "new_name"


async def test_patch_agent_missing_fields_report_whole_body(client: TestClient, user: User) -> None:
    agent = await register_agent(client, user)
    sent = {"agent_id": agent["id"], "agent_name": "x", "agent_description": None, "agent_schema": {}}
    resp = await client.patch(f"/api/agents/{agent['id']}", headers=user.headers, json=sent)
    assert resp.status == 422
    assert await resp.json() == {"detail": [
        {"type": "missing", "loc": ["body", field], "msg": "Field required", "input": sent}
        for field in ("name", "description", "input_parameters")]}


async def test_patch_agent_of_other_user_is_400_and_unchanged(client: TestClient, user: User, other_user: User,
                                                              db) -> None:
    agent = await register_agent(client, other_user, "theirs", "d")
    resp = await client.patch(f"/api/agents/{agent['id']}", headers=user.headers,
                              json={"name": "mine", "description": "x", "input_parameters": {}})
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Agent '{agent['id']}' does not exist"}
    assert await db.fetchval("SELECT name FROM agents") == "theirs"


async def test_delete_agent_only_own_then_400(client: TestClient, user: User, other_user: User, db) -> None:
    theirs = await register_agent(client, other_user)
    resp = await client.delete(f"/api/agents/{theirs['id']}", headers=user.headers)
    assert resp.status == 400
    assert await resp.json() == {"detail": f"Agent {theirs['id']} was not found"}
    assert await db.fetchval("SELECT count(*) FROM agents") == 1  # D03
    mine = await register_agent(client, user)
    resp = await client.delete(f"/api/agents/{mine['id']}", headers=user.headers)
    assert resp.status == 204 and await resp.read() == b""
    resp = await client.delete(f"/api/agents/{mine['id']}", headers=user.headers)
    assert resp.status == 400


async def test_delete_agent_deactivates_flows_containing_it(client: TestClient, user: User, db) -> None:
    a = await active_agent(client, db, user, "a")
    b = await active_agent(client, db, user, "b")
    resp = await client.post("/api/agentflows/register", headers=user.headers, json={
        "name": "f", "description": "d", "flow": [{"id": a["id"], "type": "genai"}, {"id": b["id"], "type": "genai"}]})
    assert resp.status == 200
    resp = await client.delete(f"/api/agents/{a['id']}", headers=user.headers)
    assert resp.status == 204
    row = await db.fetchrow("SELECT is_active, updated_at > created_at AS bumped FROM agentworkflows")
    assert row["is_active"] is False and row["bumped"] is True
    await set_active(db, b["id"], False)


async def test_register_agent_retries_alias_collision(client: TestClient, user: User, monkeypatch) -> None:
    from genai_backend import naming

    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(naming, "new_alias", lambda base: f"{base}_{next(suffixes)}")
    first = await register_agent(client, user, "twin")
    second = await register_agent(client, user, "twin")
    assert (first["alias"], second["alias"]) == ("twin_aaaaaa", "twin_bbbbbb")
