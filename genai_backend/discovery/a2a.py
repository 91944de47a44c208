"""A2A agent-card discovery: fetch, validate and reshape a card into its stored form."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from marshmallow import ValidationError
from yarl import URL

from genai_backend import limits
from genai_backend.discovery.guard import UrlRefused
from genai_backend.discovery.urls import UrlError, origin
from genai_backend.schemas.a2a_cards import A2ACardSchema

log = logging.getLogger(__name__)
_CARDS = A2ACardSchema()

# A2A 0.3 and 1.0 publish the card here; agents of 0.2.x only under the classic name, tried on a 404.
CARD_PATH_NEW = "/.well-known/agent-card.json"
CARD_PATH = "/.well-known/agent.json"
# Cards without `preferredTransport` (0.2.x) speak JSON-RPC, the only binding of those versions.
DEFAULT_TRANSPORT = "JSONRPC"
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TASK_DESCRIPTION = "A meaningful, well-formulated task for the agent"


class CardUnavailable(Exception):
    """No valid card: unreachable, refused, non-200, too big, not JSON, or not a valid card."""


async def fetch_card(url: str, *, session: aiohttp.ClientSession, timeout: float = 10,
                     max_bytes: int = 1024 * 1024) -> dict[str, Any]:
    """The card of the agent at `url`'s origin, in its stored shape (rest-api #35).

    `{"name", "description", "card_content", "server_url", "endpoint_url", "protocol_version",
    "transport"}`; `server_url` is the origin, which also replaces the card's own `url` in
    `card_content`; the last three are the interface the card declares first (A2A 0.2.x, 0.3,
    1.0). Redirects are followed only within the origin. Give it a session
    on `guarded_connector(policy)` (the SSRF guard) that verifies TLS (aiohttp's default).
    """
    try:
        base = origin(url)
    except UrlError as exc:
        raise CardUnavailable(f"invalid URL: {exc.msg}") from exc
    try:
        async with asyncio.timeout(timeout):
            status, body = await _get(session, URL(base + CARD_PATH_NEW), max_bytes)
            if status == 404:
                status, body = await _get(session, URL(base + CARD_PATH), max_bytes)
    except TimeoutError as exc:
        raise CardUnavailable(f"no answer from {base} within {timeout:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise CardUnavailable(f"cannot fetch the card from {base}: {_reason(exc)}") from exc
    if status != 200:
        raise CardUnavailable(f"{base} answered {status} for the agent card")
    try:
        data = limits.loads(body, stdlib_fallback=True)
    except (ValueError, RecursionError) as exc:
        raise CardUnavailable(f"the agent card of {base} is not JSON") from exc
    try:
        interface = declared_interface(data)
        return {**stored_card(_CARDS.load(_with_v1_defaults(data)), base), **interface}
    except ValidationError as exc:
        raise CardUnavailable(f"the agent card of {base} is invalid: {exc.messages}") from exc
    except RecursionError as exc:  # free-form parts (securitySchemes) can nest deeply
        raise CardUnavailable(f"the agent card of {base} is nested too deeply") from exc


def stored_card(card: dict[str, Any], base: str) -> dict[str, Any]:
    """A validated card as stored: name/description/url taken out, nulls dropped, spaces in names → `_`."""
    content = _without_nulls({key: value for key, value in card.items() if key not in ("name", "description", "url")})
    for skill in content.get("skills", []):
        skill["name"] = skill["name"].replace(" ", "_")
    return {"name": card["name"].replace(" ", "_"), "description": card["description"],
            "card_content": content, "server_url": base}


def declared_interface(data: Any) -> dict[str, str | None]:
    """The endpoint URL, protocol version and transport a card of any supported version declares.

    1.0 lists `supportedInterfaces` in the agent's order of preference, each with its own binding
    and version; 0.3 and 0.2.x have one main `url` (`preferredTransport`, `protocolVersion`;
    0.2 cards before 0.2.5 declare no version, stored as null).
    """
    if not isinstance(data, dict):
        raise ValidationError("the card is not a JSON object")
    interfaces = data.get("supportedInterfaces")
    if interfaces is not None:
        if not isinstance(interfaces, list) or not interfaces or not isinstance(interfaces[0], dict):
            raise ValidationError({"supportedInterfaces": ["must be a non-empty list of interfaces"]})
        first = interfaces[0]
        url, binding, version = first.get("url"), first.get("protocolBinding"), first.get("protocolVersion")
        if not isinstance(url, str) or not all(isinstance(v, (str, type(None))) for v in (binding, version)):
            raise ValidationError({"supportedInterfaces": ["url, protocolBinding and protocolVersion are strings"]})
        return {"endpoint_url": url, "protocol_version": version or "1.0", "transport": binding or DEFAULT_TRANSPORT}
    url, transport, version = data.get("url"), data.get("preferredTransport"), data.get("protocolVersion")
    if not all(isinstance(v, (str, type(None))) for v in (url, transport, version)):
        raise ValidationError({"url": ["url, preferredTransport and protocolVersion are strings"]})
    return {"endpoint_url": url, "protocol_version": version, "transport": transport or DEFAULT_TRANSPORT}


def _with_v1_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A 1.0 card as the 0.x subset expects it: protobuf's JSON form omits empty lists and messages,
    and the main `url` moved into `supportedInterfaces`."""
    if "supportedInterfaces" not in data:
        return data
    card = dict(data)
    card.setdefault("url", data["supportedInterfaces"][0]["url"])
    for key in ("defaultInputModes", "defaultOutputModes", "skills"):
        card.setdefault(key, [])
    card.setdefault("capabilities", {})
    return card


async def _get(session: aiohttp.ClientSession, url: URL, max_bytes: int) -> tuple[int, bytes]:
    """GET following at most MAX_REDIRECTS same-origin redirects; the body only for a 200."""
    start = current = url
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(current, allow_redirects=False) as resp:
            if resp.status in _REDIRECTS and "Location" in resp.headers:
                target = current.join(URL(resp.headers["Location"]))
                if not _same_origin(start, target):
                    # D29: a card URL must not become a way to reach other hosts.
                    raise CardUnavailable(f"{current} redirects to another origin ({target.origin()}); not followed")
                current = target
                continue
            if resp.status != 200:
                return resp.status, b""
            return 200, await _read_limited(resp, max_bytes)
    raise CardUnavailable(f"more than {MAX_REDIRECTS} redirects from {start}")


def _same_origin(start: URL, target: URL) -> bool:
    if (start.scheme, start.host, start.port) == (target.scheme, target.host, target.port):
        return True
    # An http → https upgrade on the same host with default ports stays with the same server.
    return (start.host == target.host and (start.scheme, start.port) == ("http", 80)
            and (target.scheme, target.port) == ("https", 443))


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise CardUnavailable(f"the agent card is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > max_bytes:
            raise CardUnavailable(f"the agent card is larger than {max_bytes} bytes")
    return bytes(body)


def _reason(exc: BaseException) -> str:
    refused = exc if isinstance(exc, UrlRefused) else getattr(exc, "os_error", None)
    if isinstance(refused, UrlRefused):
        return f"refused: {refused.reason}"
    return str(exc) or type(exc).__name__


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def a2a_properties() -> dict[str, Any]:
    """The two fixed arguments the master agent fills for any A2A agent (or flow starting with one)."""
    return {"task": {"type": "string", "description": _TASK_DESCRIPTION}, "text": {"type": "string"}}


def a2a_schema(title: str, description: str | None, skills: list[dict[str, Any]]) -> dict[str, Any]:
    """The `C(title, description, skills)` schema of rest-api #8: how an A2A card is offered to the LLM."""
    skill_lines = "\n".join(str(skill.get("description", "")) for skill in skills)
    return {
        "title": title.strip(),
        "description": f"{description or ''}\nSKILLS:\n{skill_lines}",
        "properties": a2a_properties(),
        "required": ["task", "text"],
        "type": "object",
    }
