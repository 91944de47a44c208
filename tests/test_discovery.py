"""Network side of MCP/A2A discovery against real local servers: normalisation, SSRF guard, tools, cards."""
from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from genai_backend.discovery.a2a import CardUnavailable, a2a_schema, fetch_card
from genai_backend.discovery.guard import (
    UrlPolicy,
    UrlRefused,
    check_url,
    classify_address,
    find_refusal,
    guarded_connector,
    guarded_httpx_client,
)
from genai_backend.discovery.mcp import McpUnavailable, list_tools, tool_schema
from genai_backend.discovery.urls import UrlError, normalise_url, origin
from genai_backend.schemas.a2a_cards import A2ACardSchema
from tests.tool_servers import REIMBURSEMENT_CARD, RedirectServer, card_server, hanging_server, mcp_server

METADATA = "169.254.169.254"
NO_PRIVATE = UrlPolicy(allow_private=False)

# ----- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://h:8888", "http://h:8888/"),
    ("HTTP://EXAMPLE.com:80/x", "http://example.com/x"),
    ("https://x:443", "https://x/"),
    ("https://x:8443", "https://x:8443/"),
    ("http://127.0.0.1:10102", "http://127.0.0.1:10102/"),
    ("http://127.0.0.1:8988/mcp", "http://127.0.0.1:8988/mcp"),
    ("http://localhost:8000/sse?x=1#f", "http://localhost:8000/sse?x=1#f"),
    ("  http://my_mcp-server:8000/mcp  ", "http://my_mcp-server:8000/mcp"),
    ("http://[0:0::1]:80", "http://[::1]/"),
    ("http://0x7f.1/a/../b/./c", "http://127.0.0.1/b/c"),
    ("http://münchen.de/ä?q=ü", "http://xn--mnchen-3ya.de/%C3%A4?q=%C3%BC"),
    ("http:\\\\h\\p", "http://h/p"),
])
def test_normalise_url_table(raw: str, expected: str) -> None:
    assert normalise_url(raw) == expected


@pytest.mark.parametrize(("raw", "error"), [
    ("notaurl", "relative URL without a base"),
    ("", "input is empty"),
    ("http://", "empty host"),
    ("http://:80/x", "empty host"),
    ("http://h:99999", "invalid port number"),
    ("http://h:8o", "invalid port number"),
    ("http://a b/", "invalid international domain name"),
    ("http://xn--/", "invalid international domain name"),
    ("http://[::1/", "invalid IPv6 address"),
    ("http://1.2.3.256/", "invalid IPv4 address"),
])
def test_normalise_url_parsing_errors(raw: str, error: str) -> None:
    with pytest.raises(UrlError) as info:
        normalise_url(raw)
    assert (info.value.type, info.value.msg, info.value.ctx) == (
        "url_parsing", f"Input should be a valid URL, {error}", {"error": error})


@pytest.mark.parametrize("raw", ["ftp://x", "mailto:a@b", "javascript:alert(1)", "ws://h/"])
def test_normalise_url_scheme_errors(raw: str) -> None:
    with pytest.raises(UrlError) as info:
        normalise_url(raw)
    assert (info.value.type, info.value.msg, info.value.ctx) == (
        "url_scheme", "URL scheme should be 'http' or 'https'", {"expected_schemes": "'http' or 'https'"})


_PYDANTIC_CASES = [
    "http://h:8888", "HTTP://EXAMPLE.com:80/x", "notaurl", "ftp://x", "http://", "http://h:x", "http://ex%41mple.com",
    "http://a b", "http://[::1", "http://127.1", "http://1.2.3.256", "http:example.com", "http:///x",
    "http://user:p@ss@h/a/../b/./c", "http://-a-.com", "http://xn--a.com", "http://a..b", "http://h/%zz sp",
    "http://h?q=a b", "http://h:", "http://*.x", "http://a%00b", "http://ß.de", "http://[::ffff:1.2.3.4]/",
    "http://999999999999", "http://0", "http://a.0x1g", "http://foo.09", "http://09.foo", "http://h#a?b",
    "http://h/.%2e/x", 'http://h/"<>`{}', "http://h/?\"<>`{}'", "http://u s:p w@h/", "http://u@/", "http://[::]",
    "http://[1:0:0:2:0:0:0:3]", "http://h:080", "http://EXAMPLE.COM.", "http://☃.net", "http://%E2%98%83.net",
    "http://\u00ad", "http://a\u200db", "http://h/^|", "http://u^|:p@h/", "file:///etc/passwd", "http://h\x00",
]


@pytest.mark.parametrize("raw", _PYDANTIC_CASES)
def test_normalise_url_matches_pydantic(raw: str) -> None:
    # pydantic comes with the MCP SDK; it is the reference's own URL parser.
    pydantic = pytest.importorskip("pydantic")
    adapter = pydantic.TypeAdapter(pydantic.AnyHttpUrl)
    try:
        expected: tuple[Any, ...] = ("ok", str(adapter.validate_python(raw)))
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        expected = (error["type"], error["msg"], error.get("ctx"))
    try:
        actual: tuple[Any, ...] = ("ok", normalise_url(raw))
    except UrlError as exc:
        actual = (exc.type, exc.msg, exc.ctx)
    assert actual == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:10102/a/b?x=1#y", "http://127.0.0.1:10102"),
    ("http://127.0.0.1:10102", "http://127.0.0.1:10102"),
    ("HTTPS://u:p@Example.COM:443/x", "https://example.com"),
    ("http://[::1]:9000/", "http://[::1]:9000"),
])
def test_origin_of_url(url: str, expected: str) -> None:
    assert origin(url) == expected


# ----- SSRF policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    (METADATA, "blocked"), ("169.254.170.2", "blocked"), ("100.100.100.200", "blocked"), ("0.0.0.0", "blocked"),
    ("224.0.0.1", "blocked"), ("255.255.255.255", "blocked"), ("192.0.2.1", "blocked"), ("fe80::1", "blocked"),
    ("fd00:ec2::254", "blocked"), ("ff02::1", "blocked"), ("::", "blocked"),
    ("::ffff:169.254.169.254", "blocked"), ("64:ff9b::a9fe:a9fe", "blocked"), ("2002:a9fe:a9fe::1", "blocked"),
    ("127.0.0.1", "private"), ("10.1.2.3", "private"), ("172.20.0.5", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "private"), ("::1", "private"), ("fd12:3456::1", "private"), ("::ffff:127.0.0.1", "private"),
    ("8.8.8.8", "public"), ("2606:4700:4700::1111", "public"),
])
def test_classify_address(address: str, kind: str) -> None:
    assert classify_address(address) == kind


@pytest.mark.parametrize("policy", [UrlPolicy(), UrlPolicy(allow_hosts=("169.254.0.0/16", METADATA))])
async def test_check_url_refuses_metadata_whatever_the_policy(policy: UrlPolicy) -> None:
    for url in (f"http://{METADATA}/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:a9fe:a9fe]/",
                "http://0xa9fea9fe/"):
        with pytest.raises(UrlRefused, match="link-local"):
            await check_url(url, policy)


async def test_check_url_localhost_depends_on_allow_private() -> None:
    await check_url("http://localhost:8000/mcp", UrlPolicy())
    await check_url("http://127.0.0.1:8000/mcp", UrlPolicy())
    for url in ("http://localhost:8000/mcp", "http://127.0.0.1:8000/mcp", "http://[::1]:8000/mcp"):
        with pytest.raises(UrlRefused, match="private"):
            await check_url(url, NO_PRIVATE)
    await check_url("http://LOCALHOST.:8000/", UrlPolicy(allow_private=False, allow_hosts=("localhost",)))
    await check_url("http://127.0.0.1:8000/", UrlPolicy(allow_private=False, allow_hosts=("127.0.0.0/8",)))
    await check_url("http://8.8.8.8/", NO_PRIVATE)


async def test_check_url_malformed_is_url_error() -> None:
    with pytest.raises(UrlError):
        await check_url("notaurl", UrlPolicy())


@pytest.fixture
async def guarded_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=guarded_connector(UrlPolicy())) as session:
        yield session


async def _refusal_of(session: aiohttp.ClientSession, url: str) -> UrlRefused:
    started = time.perf_counter()
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)):
            pass
    assert time.perf_counter() - started < 1, "refused before any connection attempt"
    assert isinstance(info.value.os_error, UrlRefused), info.value
    return info.value.os_error


async def test_guarded_connector_refuses_metadata_literal(guarded_session: aiohttp.ClientSession) -> None:
    refusal = await _refusal_of(guarded_session, f"http://{METADATA}/latest/meta-data/")
    assert "link-local" in refusal.reason


async def test_guarded_connector_refuses_redirect_to_metadata(guarded_session: aiohttp.ClientSession) -> None:
    async with RedirectServer(f"http://{METADATA}/latest/meta-data/") as server:
        await _refusal_of(guarded_session, server.url)


async def test_guarded_connector_private_addresses_follow_policy() -> None:
    async with card_server() as server:
        card_url = f"http://localhost:{server.port}/.well-known/agent.json"
        async with aiohttp.ClientSession(connector=guarded_connector(UrlPolicy())) as session:
            async with session.get(card_url) as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession(connector=guarded_connector(NO_PRIVATE)) as session:
            assert "private" in (await _refusal_of(session, card_url)).reason
            await _refusal_of(session, server.url)  # the IP literal bypasses aiohttp's resolver
        policy = UrlPolicy(allow_private=False, allow_hosts=("localhost",))
        async with aiohttp.ClientSession(connector=guarded_connector(policy)) as session:
            async with session.get(card_url) as resp:
                assert resp.status == 200


async def test_guarded_httpx_client_refuses_metadata_and_redirects() -> None:
    async with card_server() as cards, RedirectServer(f"http://{METADATA}/") as redirect:
        async with guarded_httpx_client(UrlPolicy(), timeout=5) as client:
            resp = await client.get(f"http://localhost:{cards.port}/.well-known/agent.json")
            assert resp.status_code == 200
            with pytest.raises(UrlRefused):
                await client.get(f"http://{METADATA}/")
            with pytest.raises(UrlRefused):
                await client.get(redirect.url, follow_redirects=True)
        async with guarded_httpx_client(NO_PRIVATE, timeout=5) as client:
            with pytest.raises(UrlRefused, match="private"):
                await client.get(cards.url)


async def test_find_refusal_through_client_wrappings(guarded_session: aiohttp.ClientSession) -> None:
    refused = UrlRefused("why")
    with pytest.raises(aiohttp.ClientError) as client_error:
        async with guarded_session.get(f"http://{METADATA}/"):
            pass
    assert "link-local" in str(find_refusal(client_error.value))
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = BaseExceptionGroup("task group", [ValueError("other"), ExceptionGroup("inner", [refused])])
    assert find_refusal(wrapped) is refused
    assert find_refusal(RuntimeError("plain")) is None


# ----- MCP ----------------------------------------------------------------------------------------

def _check_twenty_tools(tools: list[Any]) -> None:
    assert [tool.name for tool in tools] == ["test_tool", "noargs", "annotated"] + [f"tool_{i}" for i in range(3, 20)]
    by_name = {tool.name: tool for tool in tools}
    assert by_name["test_tool"].description == "Returns name"
    assert by_name["test_tool"].input_schema == {
        "properties": {"name": {"title": "Name", "type": "string"}}, "required": ["name"],
        "title": "test_toolArguments", "type": "object"}
    assert by_name["test_tool"].annotations is None
    assert by_name["noargs"].input_schema["properties"] == {}
    assert by_name["annotated"].annotations == {"title": "Annotated", "readOnlyHint": True, "openWorldHint": False}
    assert by_name["tool_7"].description == "Tool number 7"


async def test_list_tools_streamable_http() -> None:
    async with mcp_server(20) as server:
        _check_twenty_tools(await list_tools(server.url, policy=UrlPolicy(), timeout=10))


async def test_list_tools_falls_back_to_http_sse() -> None:
    async with mcp_server(20, transport="sse") as server:
        _check_twenty_tools(await list_tools(server.url, policy=UrlPolicy(), timeout=10))


async def test_list_tools_follows_next_cursor() -> None:
    async with mcp_server(20, page_size=7) as server:
        _check_twenty_tools(await list_tools(server.url, policy=UrlPolicy(), timeout=10))


async def test_list_tools_server_down_then_back() -> None:
    async with mcp_server(3) as server:
        await server.stop()
        started = time.perf_counter()
        with pytest.raises(McpUnavailable):
            await list_tools(server.url, policy=UrlPolicy(), timeout=10)
        assert time.perf_counter() - started < 3
        await server.start()
        assert len(await list_tools(server.url, policy=UrlPolicy(), timeout=10)) == 3


async def test_list_tools_hanging_server_times_out() -> None:
    async with hanging_server() as server:
        started = time.perf_counter()
        with pytest.raises(McpUnavailable, match="within 1 s"):
            await list_tools(server.url + "mcp", policy=UrlPolicy(), timeout=1)
        assert 0.9 < time.perf_counter() - started < 3


async def test_list_tools_response_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from genai_backend.discovery import guard

    monkeypatch.setattr(guard, "MAX_RESPONSE_BYTES", 2000)  # the 20-tool listing is larger
    for transport in ("streamable-http", "sse"):
        async with mcp_server(20, transport=transport) as server:  # type: ignore[arg-type]
            started = time.perf_counter()
            with pytest.raises(McpUnavailable):
                await list_tools(server.url, policy=UrlPolicy(), timeout=10)
            assert time.perf_counter() - started < 3


async def test_list_tools_not_an_mcp_server() -> None:
    async with card_server() as server:
        with pytest.raises(McpUnavailable):
            await list_tools(server.url + ".well-known/agent.json", policy=UrlPolicy(), timeout=5)


async def test_list_tools_refused_addresses() -> None:
    with pytest.raises(McpUnavailable, match="link-local"):
        await list_tools(f"http://{METADATA}/mcp", policy=UrlPolicy(), timeout=5)
    async with mcp_server(3) as server:
        with pytest.raises(McpUnavailable, match="private"):
            await list_tools(server.url, policy=NO_PRIVATE, timeout=5)
        assert len(await list_tools(server.url, policy=UrlPolicy(allow_private=False, allow_hosts=("127.0.0.1",)),
                                    timeout=5)) == 3


async def test_list_tools_does_not_follow_redirect_to_metadata() -> None:
    async with RedirectServer(f"http://{METADATA}/mcp") as server:
        started = time.perf_counter()
        with pytest.raises(McpUnavailable):
            await list_tools(server.url, policy=UrlPolicy(), timeout=5)
        assert time.perf_counter() - started < 3


def test_tool_schema_examples() -> None:
    # rest-api #8 and #31.
    schema = tool_schema("Returns name", {
        "properties": {"name": {"title": "Name", "type": "string"}}, "required": ["name"],
        "title": "test_toolArguments", "type": "object"}, "test_tool_vopfhv")
    assert schema == {"description": "Returns name", "properties": {"name": {"title": "Name", "type": "string"}},
                      "required": ["name"], "title": "test_tool_vopfhv", "type": "object"}
    schema = tool_schema("No args", {"properties": {}, "title": "noargsArguments", "type": "object"}, "noargs_bwofcu")
    assert schema == {"description": "No args", "properties": {}, "title": "noargs_bwofcu", "type": "object",
                      "required": []}
    assert list(schema) == ["description", "properties", "title", "type", "required"]


def test_tool_schema_drops_name_and_null_description() -> None:
    schema = tool_schema(None, {"type": "object", "name": "x", "description": "from schema", "required": ["a"]}, "t")
    assert schema == {"type": "object", "description": "from schema", "required": [], "title": "t"}


# ----- A2A ----------------------------------------------------------------------------------------

@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=guarded_connector(UrlPolicy())) as client:
        yield client


def _stored_example(base: str) -> dict[str, Any]:
    # rest-api #35's example, in its key order.
    return {
        "name": "Reimbursement_Agent",
        "description": "Handles reimbursements.",
        "card_content": {
            "defaultInputModes": ["text", "text/plain"], "defaultOutputModes": ["text", "text/plain"],
            "skills": [{"id": "process_reimbursement", "name": "Process_Reimbursement_Tool",
                        "description": "Helps with reimbursement.", "examples": ["Reimburse me $20"],
                        "tags": ["reimbursement"]}],
            "version": "1.0.0", "capabilities": {"streaming": True}},
        "server_url": base,
        "endpoint_url": "http://localhost:10102/", "protocol_version": "0.2.5", "transport": "JSONRPC",
    }


async def test_fetch_card_stored_shape(session: aiohttp.ClientSession) -> None:
    async with card_server() as server:
        base = f"http://127.0.0.1:{server.port}"
        stored = await fetch_card(f"{base}/some/path?q=1#frag", session=session)
        expected = _stored_example(base)
        assert stored == expected
        assert list(stored["card_content"]) == list(expected["card_content"])
        assert list(stored["card_content"]["skills"][0]) == list(expected["card_content"]["skills"][0])
        assert server.requests == ["/.well-known/agent-card.json", "/.well-known/agent.json"]


async def test_fetch_card_only_agent_card_json(session: aiohttp.ClientSession) -> None:
    async with card_server(mode="agent-card.json") as server:
        stored = await fetch_card(server.url, session=session)
        assert stored == _stored_example(f"http://127.0.0.1:{server.port}")
        assert server.requests == ["/.well-known/agent-card.json"]


@pytest.mark.parametrize("mode", ["500", "invalid-json"])
async def test_fetch_card_bad_answer_is_unavailable(session: aiohttp.ClientSession, mode: Any) -> None:
    async with card_server(mode=mode) as server:
        with pytest.raises(CardUnavailable):
            await fetch_card(server.url, session=session)


@pytest.mark.parametrize("change", [
    lambda card: card.pop("skills"), lambda card: card.pop("version"), lambda card: card.pop("capabilities"),
    lambda card: card.__setitem__("skills", "none"), lambda card: card["skills"][0].pop("description"),
    lambda card: card.__setitem__("defaultInputModes", [1]), lambda card: card.__setitem__("name", None),
])
async def test_fetch_card_invalid_card_is_unavailable(session: aiohttp.ClientSession, change: Any) -> None:
    card = copy.deepcopy(REIMBURSEMENT_CARD)
    change(card)
    async with card_server(card) as server:
        with pytest.raises(CardUnavailable, match="invalid"):
            await fetch_card(server.url, session=session)


async def test_fetch_card_not_an_object_is_unavailable(session: aiohttp.ClientSession) -> None:
    async with card_server([REIMBURSEMENT_CARD]) as server:  # type: ignore[arg-type]
        with pytest.raises(CardUnavailable, match="invalid"):
            await fetch_card(server.url, session=session)


async def test_fetch_card_server_down_then_back(session: aiohttp.ClientSession) -> None:
    async with card_server() as server:
        await server.stop()
        with pytest.raises(CardUnavailable, match="cannot fetch"):
            await fetch_card(server.url, session=session)
        await server.start()
        assert (await fetch_card(server.url, session=session))["name"] == "Reimbursement_Agent"


async def test_fetch_card_hanging_server_times_out(session: aiohttp.ClientSession) -> None:
    async with hanging_server() as server:
        started = time.perf_counter()
        with pytest.raises(CardUnavailable, match="within 1 s"):
            await fetch_card(server.url, session=session, timeout=1)
        assert time.perf_counter() - started < 3


async def test_fetch_card_redirects_only_within_origin(session: aiohttp.ClientSession) -> None:
    async with card_server(mode="redirect", redirect_to=f"http://{METADATA}/latest/meta-data/") as server:
        with pytest.raises(CardUnavailable, match="another origin"):
            await fetch_card(server.url, session=session)
        server.redirect_to = "/.well-known/moved.json"
        assert (await fetch_card(server.url, session=session))["name"] == "Reimbursement_Agent"


async def test_fetch_card_too_big_is_unavailable(session: aiohttp.ClientSession) -> None:
    card = copy.deepcopy(REIMBURSEMENT_CARD)
    card["description"] = "x" * 5000
    async with card_server(card) as server:
        with pytest.raises(CardUnavailable, match="larger"):
            await fetch_card(server.url, session=session, max_bytes=4096)


async def test_fetch_card_refused_address(session: aiohttp.ClientSession) -> None:
    with pytest.raises(CardUnavailable, match="refused"):
        await fetch_card(f"http://{METADATA}/", session=session)


def test_card_schema_defaults_and_unknown_keys() -> None:
    card = copy.deepcopy(REIMBURSEMENT_CARD)
    del card["skills"][0]["tags"]
    loaded = A2ACardSchema().load(card)
    assert loaded["skills"][0]["tags"] == []
    assert "protocolVersion" not in loaded


def test_a2a_schema_example() -> None:
    skills = [{"description": "Helps with reimbursement."}, {"description": "Second."}]
    assert a2a_schema(" Reimbursement_Agent_diygvm ", "Handles reimbursements.", skills) == {
        "title": "Reimbursement_Agent_diygvm",
        "description": "Handles reimbursements.\nSKILLS:\nHelps with reimbursement.\nSecond.",
        "properties": {"task": {"type": "string", "description": "A meaningful, well-formulated task for the agent"},
                       "text": {"type": "string"}},
        "required": ["task", "text"],
        "type": "object",
    }
