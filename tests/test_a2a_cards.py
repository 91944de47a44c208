"""Agent cards of A2A 0.2.x, 0.3 and 1.0 (built with a2a-sdk's own types), registered and refreshed."""
from __future__ import annotations

import copy
from typing import Any

import asyncpg
import pytest
from a2a.compat.v0_3 import types as v03
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from aiohttp.test_utils import TestClient
from google.protobuf.json_format import MessageToDict

from genai_backend.db import POOL
from genai_backend.discovery.client import DISCOVERY
from genai_backend.jobs.refresh import refresh_tools
from tests.conftest import User
from tests.tool_servers import REIMBURSEMENT_CARD, card_server

AGENTS = "/api/a2a/agents"
ENDPOINT = "http://agent.example.test:9999/a2a"
# What the master agent and the front-end read does not depend on the card's version.
CONTENT = {"defaultInputModes": ["text"], "defaultOutputModes": ["text"],
           "skills": [{"id": "echo", "name": "Echo_Skill", "description": "Echoes text.", "examples": ["hi"],
                       "tags": ["echo"]}],
           "version": "2.1.0", "capabilities": {"streaming": True}}


def card_v02(with_version: bool = True) -> dict[str, Any]:
    """A 0.2.x card (0.2.5 declares `protocolVersion`, earlier ones nothing)."""
    card = {"name": "Echo Agent", "description": "Echoes.", "url": ENDPOINT, "version": "2.1.0",
            "defaultInputModes": ["text"], "defaultOutputModes": ["text"], "capabilities": {"streaming": True},
            "skills": [{"id": "echo", "name": "Echo Skill", "description": "Echoes text.", "tags": ["echo"],
                        "examples": ["hi"]}]}
    return {**card, "protocolVersion": "0.2.5"} if with_version else card


def card_v03(transport: str = "JSONRPC") -> dict[str, Any]:
    card = v03.AgentCard(
        name="Echo Agent", description="Echoes.", url=ENDPOINT, version="2.1.0", preferred_transport=transport,
        additional_interfaces=[v03.AgentInterface(url="http://agent.example.test:9998", transport="GRPC")],
        default_input_modes=["text"], default_output_modes=["text"],
        capabilities=v03.AgentCapabilities(streaming=True),
        skills=[v03.AgentSkill(id="echo", name="Echo Skill", description="Echoes text.", tags=["echo"],
                               examples=["hi"])])
    dumped: dict[str, Any] = card.model_dump(mode="json", exclude_none=True)
    return dumped


def _card_v10(*interfaces: AgentInterface, skills: bool = True) -> AgentCard:
    return AgentCard(
        name="Echo Agent", description="Echoes.", version="2.1.0", supported_interfaces=list(interfaces),
        capabilities=AgentCapabilities(streaming=True), default_input_modes=["text"], default_output_modes=["text"],
        skills=[AgentSkill(id="echo", name="Echo Skill", description="Echoes text.", tags=["echo"],
                           examples=["hi"])] if skills else [])


def card_v10(skills: bool = True) -> dict[str, Any]:
    """A 1.0 card in protobuf's JSON form: no top-level `url`, empty lists left out."""
    card = _card_v10(AgentInterface(url=ENDPOINT, protocol_binding="HTTP+JSON", protocol_version="1.0"),
                     AgentInterface(url=ENDPOINT + "/rpc", protocol_binding="JSONRPC", protocol_version="1.0"),
                     skills=skills)
    return dict(MessageToDict(card))


def card_v10_with_v03_compat() -> dict[str, Any]:
    """What a2a-sdk 1.x serves when the agent also keeps a 0.3 interface: 1.0 fields plus 0.3's."""
    card = _card_v10(AgentInterface(url=ENDPOINT, protocol_binding="JSONRPC", protocol_version="1.0"),
                     AgentInterface(url=ENDPOINT + "/v03", protocol_binding="JSONRPC", protocol_version="0.3"))
    return dict(agent_card_to_dict(card))


async def register(client: TestClient, user: User, url: str) -> dict[str, Any]:
    resp = await client.post(AGENTS, json={"server_url": url}, headers=user.headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.parametrize(("card", "declared"), [
    (card_v02(with_version=False), (ENDPOINT, None, "JSONRPC")),
    (card_v02(), (ENDPOINT, "0.2.5", "JSONRPC")),
    (card_v03(), (ENDPOINT, "0.3.0", "JSONRPC")),
    (card_v03("HTTP+JSON"), (ENDPOINT, "0.3.0", "HTTP+JSON")),
    (card_v10(), (ENDPOINT, "1.0", "HTTP+JSON")),
    (card_v10_with_v03_compat(), (ENDPOINT, "1.0", "JSONRPC")),
], ids=["0.2.0", "0.2.5", "0.3", "0.3-rest", "1.0", "1.0+0.3-compat"])
async def test_card_of_each_version_is_registered(client: TestClient, user: User, card: dict[str, Any],
                                                  declared: tuple[str, str | None, str]) -> None:
    async with card_server(card, mode="agent-card.json") as server:
        created = await register(client, user, server.url)
    base = f"http://127.0.0.1:{server.port}"
    assert server.requests == ["/.well-known/agent-card.json"]
    assert created["name"] == "Echo_Agent" and created["server_url"] == base
    assert created["card_content"] == CONTENT
    endpoint, version, transport = declared
    expected = {"endpoint_url": endpoint, "transport": transport,
                **({"protocol_version": version} if version else {})}  # nulls are omitted from #35's answer
    assert {k: created[k] for k in ("endpoint_url", "protocol_version", "transport") if k in created} == expected
    row = await (await client.get(f"{AGENTS}/{created['id']}", headers=user.headers)).json()
    assert (row["endpoint_url"], row["protocol_version"], row["transport"]) == declared
    # The master agent still gets the origin and the same tool schema.
    resp = await client.get("/api/agents/active", params={"agent_type": "a2a"}, headers=user.headers)
    [item] = (await resp.json())["active_connections"]
    assert item["url"] == base + "/"
    assert item["agent_schema"]["description"] == "Echoes.\nSKILLS:\nEchoes text."


async def test_v10_card_without_skills_or_modes_is_accepted(client: TestClient, user: User) -> None:
    card = card_v10(skills=False)
    card.pop("defaultInputModes")
    async with card_server(card, mode="agent-card.json") as server:
        created = await register(client, user, server.url)
    assert created["card_content"]["skills"] == [] and created["card_content"]["defaultInputModes"] == []
    assert created["protocol_version"] == "1.0"


@pytest.mark.parametrize("interfaces", [[], "x", [{"url": 5}], [{"url": ENDPOINT, "protocolVersion": 1}]])
async def test_v10_card_with_bad_interfaces_is_400(client: TestClient, user: User, db: asyncpg.Connection,
                                                   interfaces: Any) -> None:
    card = {**card_v10(), "supportedInterfaces": interfaces}
    async with card_server(card, mode="agent-card.json") as server:
        resp = await client.post(AGENTS, json={"server_url": server.url}, headers=user.headers)
    assert resp.status == 400
    assert await db.fetchval("SELECT count(*) FROM a2acards") == 0


async def test_refresh_follows_an_agent_upgrading_to_v10(client: TestClient, user: User) -> None:
    async with card_server(copy.deepcopy(REIMBURSEMENT_CARD)) as server:
        created = await register(client, user, server.url)
        assert created["protocol_version"] == "0.2.5"
        server.card = card_v10()
        server.mode = "agent-card.json"
        await refresh_tools(client.app[POOL], client.app[DISCOVERY], 5)
    row = await (await client.get(f"{AGENTS}/{created['id']}", headers=user.headers)).json()
    assert (row["endpoint_url"], row["protocol_version"], row["transport"]) == (ENDPOINT, "1.0", "HTTP+JSON")
    assert row["is_active"] is True and row["card_content"] == CONTENT
